"""Cold start: wall time of ``fmnist-edge predict one.jpg`` as a fresh process, with the
runtime-only install (no TensorFlow), default model. The photo is ``--image``, else a
400x533 phone photo rendered from a test image (:func:`fmnist_edge.photos.render_phone_photo`),
so the foreground segmentation (OpenCV import and GrabCut) is part of the time.

    python -m venv /tmp/rt && /tmp/rt/bin/pip install .      # base install: onnxruntime
    python benchmarks/cold_predict.py --exe /tmp/rt/bin/fmnist-edge \\
        --out benchmarks/results/cold_predict.json
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist_edge import atomic, data, photos
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", required=True, help="fmnist-edge of the runtime-only venv")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--image", type=Path, help="photo to classify (default: rendered)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images, labels = data.load_split("test", args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        png = args.image
        if png is None:
            png = Path(tmp) / "one.jpg"
            photos.reference_photo(images[0], int(labels[0])).save(png, quality=90)
        with Image.open(png) as img:
            size = img.size
        subprocess.run([args.exe, "predict", str(png)], check=True, capture_output=True)
        # Interleaved, side by side: the default (GrabCut: OpenCV imported) and the trim
        # (no OpenCV), so the difference is what the foreground mask costs a cold start.
        walls: dict[str, list[float]] = {"grabcut": [], "trim": []}
        output = ""
        for _ in range(args.repeats):
            for segment, times in walls.items():
                t0 = time.perf_counter()
                done = subprocess.run([args.exe, "predict", str(png), "--segment", segment],
                                      check=True, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if segment == "grabcut":
                    output = done.stdout.strip()
    probe = subprocess.run([str(Path(args.exe).with_name("python")), "-c",
                            "import importlib.util as u; print(bool(u.find_spec('tensorflow')))"],
                           capture_output=True, text=True)
    result = {"exe": args.exe, "image": str(args.image or "rendered phone photo"),
              "image_size": list(size), "repeats": args.repeats,
              "p50_s": float(np.median(walls["grabcut"])),
              "max_s": float(np.max(walls["grabcut"])), "min_s": float(np.min(walls["grabcut"])),
              "trim_p50_s": float(np.median(walls["trim"])),
              "tensorflow_installed": probe.stdout.strip() == "True", "output": output,
              "provenance": provenance()}
    atomic.write_json(args.out, result)
    print(f"cold predict p50 {result['p50_s']:.3f} s (max {result['max_s']:.3f} s; "
          f"--segment trim {result['trim_p50_s']:.3f} s), "
          f"TensorFlow installed: {result['tensorflow_installed']}; {output}")


if __name__ == "__main__":
    run_script(main)
