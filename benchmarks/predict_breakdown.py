"""Where ``predict``'s time per image goes: reading, decoding and converting a file, the
model at each batch size, and ``predict`` as a whole, on one core.

    python benchmarks/predict_breakdown.py --data-dir ../shared/fashion-mnist \\
        --photos ../shared/realphotos-dev --out benchmarks/results/predict_breakdown_<cpu>.json

On ``--pngs`` Fashion-MNIST test images saved as PNG files, each stage runs over all of them
and the stages take turns for ``--rounds`` rounds, so a slow moment of the machine hits them
alike; a stage's figure is its median over rounds of wall time per image (us):

- ``read``: the file's bytes (``open().read()``), the floor of any decoder;
- ``general path``: Pillow's decode and the conversion (``convert(open_image(path))``), what
  every image went through before the short path;
- ``short path, Pillow`` / ``short path, OpenCV``: :func:`fmnist_edge.preprocess.load_image`
  with each PNG decoder;
- ``model, batch B``: the model's ``logits`` on the decoded pixels, B images per call;
- ``predict``: :func:`fmnist_edge.predict.predict_paths` on the folder (walk, decode,
  convert, classify, the rows), with the decoder it picks for that many files.

The model share of ``predict`` is ``model, batch CHUNK`` over ``predict``: 1.0 would be a
``predict`` bound by the model alone. On ``--photo-count`` of the photos (one round: GrabCut
dominates), decode, conversion and the model's batch-1 call are timed the same way, per
photo; the conversion share is the #18 bar's ``conversion / total``.

The whole process (and the inference library's threads) is pinned to one core. ``<cpu>``
names the machine class (``xeon_amx``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from predict_throughput import pin

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.predict import CHUNK, image_files, load_model, png_decoder, predict_paths
from fmnist_edge.preprocess import (
    convert,
    decode_png_opencv,
    decode_png_pillow,
    load_image,
    open_image,
)
from fmnist_edge.provenance import provenance

BATCHES = (1, 8, CHUNK, 256)


def per_image(stages: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds of each stage's wall time per image (us);
    a stage returns how many images it handled."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for name, stage in stages.items():
            t0 = time.perf_counter()
            count = stage()
            times[name].append((time.perf_counter() - t0) / count * 1e6)
    return {name: float(np.median(v)) for name, v in times.items()}


def png_stages(folder: Path, runtime) -> dict[str, Callable[[], int]]:
    """The stages on a folder of 28x28 PNGs (see the module docstring)."""
    files = image_files(folder)
    pixels = np.stack([load_image(p).pixels for p in files])

    def each(fn: Callable[[Path], object]) -> Callable[[], int]:
        return lambda: len([fn(p) for p in files])

    def model(batch: int) -> Callable[[], int]:
        return lambda: sum(len(runtime.logits(pixels[i:i + batch]))
                           for i in range(0, len(pixels), batch))

    stages = {"read": each(Path.read_bytes),
              "general path": each(lambda p: convert(open_image(p))),
              "short path, Pillow": each(lambda p: load_image(p, png_decoder=decode_png_pillow)),
              "short path, OpenCV": each(lambda p: load_image(p, png_decoder=decode_png_opencv))}
    stages |= {f"model, batch {b}": model(b) for b in BATCHES}
    stages["predict"] = lambda: len(predict_paths([folder], runtime))
    return stages


def photo_stages(photos: list[Path], runtime) -> dict[str, Callable[[], int]]:
    """Decode, conversion (the default: GrabCut) and the model's batch-1 call, per photo."""
    decoded = [open_image(p) for p in photos]
    pixels = [convert(img).pixels[None] for img in decoded]
    return {"decode": lambda: len([open_image(p) for p in photos]),
            "conversion": lambda: len([convert(img) for img in decoded]),
            "model, batch 1": lambda: len([runtime.logits(x) for x in pixels])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--photo-count", type=int, default=60)
    parser.add_argument("--pngs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for option, value in (("--pngs", args.pngs), ("--rounds", args.rounds),
                          ("--photo-count", args.photo_count)):
        if value < 1:
            parser.error(f"{option} must be >= 1, got {value}")
    all_cores = os.sched_getaffinity(0)
    pin({min(all_cores)})
    runtime = load_model(args.model)  # as predict loads it, its threads on the pinned core
    images = data.load_split("test", args.data_dir)[0][:args.pngs]
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(images):
            Image.fromarray(image).save(Path(tmp) / f"{i:05d}.png")
        pngs = per_image(png_stages(Path(tmp), runtime), args.rounds)
    photos = image_files(args.photos)[:args.photo_count]
    on_photos = per_image(photo_stages(photos, runtime), 1)
    pin(all_cores)
    decoder = png_decoder(len(images))
    total = sum(on_photos.values())
    result = {
        "model": str(runtime.path),
        "pngs": {"images": len(images), "rounds": args.rounds, "chunk": CHUNK,
                 "predict_decoder": decoder.__name__ if decoder else "decode_png_pillow",
                 "us_per_image": pngs,
                 "model_share_of_predict": pngs[f"model, batch {CHUNK}"] / pngs["predict"],
                 "predict_images_per_s": 1e6 / pngs["predict"]},
        "photos": {"images": len(photos), "rounds": 1, "us_per_image": on_photos,
                   "conversion_share": on_photos["conversion"] / total},
        "machine": machine(), "provenance": provenance()}
    for name, us in pngs.items():
        print(f"PNG    {name:22} {us:9.1f} us/image")
    for name, us in on_photos.items():
        print(f"photo  {name:22} {us:9.1f} us/image")
    print(f"model share of predict (PNGs) {result['pngs']['model_share_of_predict']:.2f}, "
          f"conversion share (photos) {result['photos']['conversion_share']:.2f}")
    atomic.write_json(args.out, result)


if __name__ == "__main__":
    run_script(main)
