"""Photo round trip: does ``predict`` keep the model's accuracy on real-looking photos?

Renders Fashion-MNIST test images as product photos (white background, upscaled, off-centre,
RGB JPEG, a third stored with an EXIF rotation: :func:`fmnist_edge.photos.render_photo`),
writes them as files, classifies them through the conversion pipeline, and compares the
top-1 accuracy with the same model on the original 28x28 images.

    python benchmarks/photo_roundtrip.py --model fmnist_edge/models/default_int8.onnx \\
        --out benchmarks/results/photo_roundtrip.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data, photos
from fmnist_edge.benchmark import run_script
from fmnist_edge.predict import Prediction, predict_paths
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def roundtrip(model: Path, *, limit: int = 10000, seed: int = 0, data_dir=None) -> dict:
    """Accuracy on the original images and through photo -> pipeline, on ``limit`` images."""
    images, labels = data.load_split("test", data_dir)
    images, labels = images[:limit], labels[:limit]
    runtime = load(model)
    original = float((runtime.logits(images).argmax(1) == labels).mean())
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, image in enumerate(images):
            path = Path(tmp) / f"{i:05d}.jpg"
            path.write_bytes(photos.render_photo(image, rng, exif_rotation=(i % 3 == 0)))
            paths.append(path)
        rows = predict_paths(paths, runtime)
    seconds = time.perf_counter() - start
    predicted = np.array([r.top_k[0][0] if isinstance(r, Prediction) else -1 for r in rows])
    photo = float((predicted == labels).mean())
    return {"model": str(model), "images": int(limit), "original_top1": original,
            "photo_top1": photo, "retained": photo / original,
            "failed_files": int((predicted < 0).sum()), "render_and_predict_s": seconds,
            "provenance": provenance()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = roundtrip(args.model, limit=args.limit, data_dir=args.data_dir)
    atomic.write_json(args.out, result)
    print(f"original {result['original_top1']:.2%}, photos {result['photo_top1']:.2%} "
          f"({result['retained']:.1%} retained) on {result['images']} images")


if __name__ == "__main__":
    run_script(main)
