"""How the int8 TFLite's size and fidelity depend on per-layer weight granularity: for each
``--max-error-ratio`` threshold, quantize a float TFLite model with ai-edge-quantizer
(``export.granularity``: per-tensor weights for each convolution / fully connected layer whose
per-tensor rounding error is at most that many times its per-channel error) and score it with
LiteRT on the *validation* split (this chooses the export default, so never the test set):
size as a fraction of the float model, top-1 and top-1 agreement with the float model.
Threshold 0 is all per-channel; a huge one is per-tensor everywhere but depthwise.

    python benchmarks/weight_granularity.py runs/mobilenetv2/RUN/export/model_fp32.tflite \\
        --max-error-ratio 0 2.2 2.5 3 4 1e9 --data-dir ../shared/fashion-mnist \\
        --out benchmarks/results/experiments/weight_granularity_mobilenetv2.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from fmnist_edge import atomic  # noqa: E402
from fmnist_edge.benchmark import run_script
from fmnist_edge.export import data as export_data  # noqa: E402
from fmnist_edge.export import granularity  # noqa: E402
from fmnist_edge.export.config import ExportConfig  # noqa: E402
from fmnist_edge.provenance import provenance  # noqa: E402
from fmnist_edge.runtime import load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float_tflite", type=Path)
    parser.add_argument("--max-error-ratio", type=float, nargs="+", required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    # the export's own split and representative dataset (RUN/export/model_fp32.tflite)
    data = export_data.load(args.float_tflite.resolve().parent.parent, ExportConfig(),
                            args.data_dir)
    x_val, y_val, calibration = data.x_val, data.y_val, data.calibration
    blob = args.float_tflite.read_bytes()
    reference = load(args.float_tflite).logits(x_val).argmax(1)
    out = {"float_model": str(args.float_tflite), "float_bytes": len(blob),
           "num_val_images": int(len(y_val)),
           "float_val_top1": float((reference == y_val).mean()), "results": [],
           "provenance": provenance()}
    with tempfile.TemporaryDirectory() as tmp:
        for threshold in args.max_error_ratio:
            plan = granularity.plan(blob, "auto", max_error_ratio=threshold)
            path = Path(tmp) / "int8.tflite"
            path.write_bytes(granularity.quantize_int8(blob, calibration, plan))
            top1 = load(path).logits(x_val).argmax(1)
            out["results"].append({
                "max_error_ratio": threshold, "per_tensor_layers": len(plan.per_tensor),
                "per_channel_layers": len(plan.per_channel),
                "int8_bytes": path.stat().st_size,
                "size_ratio": path.stat().st_size / len(blob),
                "val_top1": float((top1 == y_val).mean()),
                "val_agreement": float((top1 == reference).mean())})
            print(out["results"][-1], flush=True)
            atomic.write_json(args.out, out)


if __name__ == "__main__":
    run_script(main)
