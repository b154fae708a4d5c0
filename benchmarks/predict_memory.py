"""Peak memory of ``fmnist-edge predict`` on very large images and on a folder of 5,000
images, as a fresh process each.

Inputs made here: a folder of the first 5,000 Fashion-MNIST test images as PNGs, a
9400x9400 PNG (grayscale, palette and RGB; just under Pillow's 89 Mpx warning, 30-300 KB on
disk) and a 24 Mpx (6000x4000) JPEG phone photo, plus a 400x533 photo as the baseline.
Peak RSS is the child's ``ru_maxrss``.

    python benchmarks/predict_memory.py --exe .venv/bin/fmnist-edge \\
        --out benchmarks/results/predict_memory_<cpu>.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from fmnist_edge import atomic, data, photos
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.provenance import provenance

_MEASURE = ("import resource, subprocess, sys; "
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
            "done.stdout.strip().replace(' ', '_')[-60:] or done.stderr.strip()[-200:])")


def make_images(folder: Path, data_dir: Path | None) -> dict[str, Path]:
    """The test images: name -> path."""
    images, labels = data.load_split("test", data_dir)
    photo = photos.reference_photo(images[0], int(labels[0]))
    pngs = folder / "fmnist_5000_png"
    pngs.mkdir()
    for i, image in enumerate(images[:5000]):
        Image.fromarray(image).save(pngs / f"{i:05d}.png")
    out = {"fmnist_5000_png/": pngs, "photo_400x533.jpg": folder / "photo_400x533.jpg"}
    photo.save(out["photo_400x533.jpg"], quality=90)
    out["photo_24mpx.jpg"] = folder / "photo_24mpx.jpg"
    photo.resize((4000, 6000) if photo.height >= photo.width else (6000, 4000),
                 Image.Resampling.BICUBIC).save(out["photo_24mpx.jpg"], quality=90)
    big = Image.new("RGB", (9400, 9400), "white")
    ImageDraw.Draw(big).rectangle((2500, 1500, 6900, 7900), fill=(30, 40, 90))
    for mode in ("L", "P", "RGB"):
        name = f"poster_9400_{mode.lower()}.png"
        converted = {"L": lambda: big.convert("L"), "RGB": lambda: big,
                     "P": lambda: big.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)}
        converted[mode]().save(folder / name)
        out[name] = folder / name
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", required=True, help="fmnist-edge to run")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_images(Path(tmp), args.data_dir).items():
            done = subprocess.run([sys.executable, "-c", _MEASURE, args.exe, "predict",
                                   str(path)], capture_output=True, text=True, check=True)
            code, kib, output = done.stdout.split(maxsplit=2)
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            with Image.open(files[0]) as img:
                size, mode = img.size, img.mode
            nbytes = sum(f.stat().st_size for f in files)
            rows.append({"image": name, "images": len(files), "size_px": list(size),
                         "mode": mode, "file_bytes": nbytes, "exit_code": int(code),
                         "peak_rss_mb": int(kib) / 1024, "output": output})
            print(f"{name:22} {len(files):5d} x {size[0]}x{size[1]} {mode:4} "
                  f"{nbytes / 1e3:8.0f} KB peak {int(kib) / 1024:6.0f} MB  exit {code}")
    atomic.write_json(args.out, {"rows": rows, "machine": machine(),
                                 "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
