"""Grad-CAM sanity: how often the heat map's peak lies on the object (pixels above 16, not
the black background) for the first N test images, per trained run.

    python benchmarks/gradcam.py runs/cnn/<id> --out benchmarks/results/gradcam_cnn.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist_edge import atomic, data, runs
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from fmnist_edge.train.explain import explain, peak_inside_object
    from fmnist_edge.train.keras_shim import load_model

    model = load_model(runs.resolve_model(args.run))
    images, labels = data.load_split("test", args.data_dir)
    images, labels = images[:args.images], labels[:args.images]
    found = explain(model, images)
    inside = peak_inside_object(found.heatmap, images)
    background = float((images.reshape(len(images), -1) <= 16).mean())
    result = {"run": str(args.run), "method": found.method, "images": int(len(images)),
              "peak_on_object": float(inside.mean()),
              "chance_background_fraction": background,
              "peak_on_object_correct_predictions": float(
                  inside[found.logits.argmax(1) == labels].mean()),
              "bar": 0.8, "provenance": provenance()}
    atomic.write_json(args.out, result)
    print(f"{found.method}: peak on the object for {result['peak_on_object']:.0%} of "
          f"{len(images)} test images (background is {background:.0%} of the pixels)")


if __name__ == "__main__":
    run_script(main)
