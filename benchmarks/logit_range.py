"""How large an exported model's logits get, and what range its int8 output was calibrated to.

    python benchmarks/logit_range.py runs/resnet50/<id>/export \\
        --out benchmarks/results/experiments/logit_range_resnet50.json

Runs the fp32 ONNX (onnxruntime) on the full test set and reports the largest |logit|, how
many images have a logit above ``--large`` in magnitude, and the float range an int8 TFLite
output can represent (``scale x 255``, from its output quantization parameters). Large float
logits are why the export gate's fp32 tolerance is relative above 1
(``export.parity.scaled_logit_diff``); a wide int8 output range means coarse int8 logits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def measure(export: Path, *, large: float, data_dir: Path | None) -> dict:
    """Logit statistics of ``export/model_fp32.onnx`` on the ``uint8[10000, 28, 28]`` test
    images and the output range of ``export/model_int8.tflite``.

    Raises:
        fmnist_edge.runtime.ModelFileError: a missing or unreadable model file (named).
        fmnist_edge.data.DataError: missing or corrupt test data.
    """
    images, labels = data.load_split("test", data_dir, download=False)
    logits = load(export / "model_fp32.onnx").logits(images)
    peak = np.abs(logits).max(1)
    worst = int(peak.argmax())
    int8 = load(export / "model_int8.tflite")
    scale, _ = int8.interpreter.get_output_details()[0]["quantization"]
    return {"export": str(export), "num_test_images": int(len(labels)),
            "fp32_max_abs_logit": float(peak.max()),
            "fp32_median_max_abs_logit": float(np.median(peak)),
            f"fp32_images_with_abs_logit_above_{large:g}": int((peak > large).sum()),
            "fp32_largest_image": {"index": worst, "label": int(labels[worst])},
            "int8_tflite_output_scale": float(scale),
            "int8_tflite_output_range": float(scale) * 255}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="a run's export folder")
    parser.add_argument("--large", type=float, default=50.0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = measure(args.export, large=args.large, data_dir=args.data_dir)
    atomic.write_json(args.out, {**record, "provenance": provenance()})
    print(record)


if __name__ == "__main__":
    run_script(main)
