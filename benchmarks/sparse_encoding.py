"""Does the TFLite converter's sparse weight encoding (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``)
make a pruned int8 model's file smaller?

    python benchmarks/sparse_encoding.py runs/mobilenetv2/<id> --data-dir ../shared/fashion-mnist \\
        --out benchmarks/results/experiments/sparse_encoding_mobilenetv2.json

The run's float model is magnitude-pruned to the export's default sparsity and allocation
(``compress.layer_sparsities``, zeroing the smallest weights of each kernel, as tfmot's
``prune_low_magnitude`` does, without fine-tuning: the file size depends only on where the
zeros are). Then it is converted to full-integer int8 twice, with ``Optimize.DEFAULT`` alone
and with ``EXPERIMENTAL_SPARSITY`` added, which stores sparse constant tensors in TFLite's
compressed ``SparsityParameters`` format (tf.lite.Optimize docs). Both files run on
``--images`` test images with LiteRT to check that the encoding changes no output.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime.litert import LiteRTRuntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--calibration-samples", type=int, default=200)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from fmnist_edge.export import compress, convert
    from fmnist_edge.export.config import ExportConfig
    from fmnist_edge.train.keras_shim import load_model

    cfg = ExportConfig()
    model = load_model(args.run / "model.keras")
    keep = compress.end_layers(model) if cfg.keep_ends_dense else ()
    targets = compress.layer_sparsities(model, cfg.sparsity, keep, cfg.sparsity_allocation)
    for layer in model.layers:
        if targets.get(layer.name, 0.0) > 0:
            weights = layer.get_weights()
            kernel = weights[0]
            cut = np.quantile(np.abs(kernel), targets[layer.name])
            weights[0] = np.where(np.abs(kernel) <= cut, 0, kernel).astype(kernel.dtype)
            layer.set_weights(weights)

    train_x, _ = data.load_split("train", args.data_dir)
    test_x, _ = data.load_split("test", args.data_dir)
    calibration = train_x[:args.calibration_samples]
    fp32 = convert.to_tflite(model, "fp32")
    dense = convert.to_tflite(model, "int8", calibration)
    sparse = convert.to_tflite(model, "int8", calibration, sparse_encoding=True)

    probs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, blob in (("dense", dense), ("sparse", sparse)):
            path = Path(tmp) / f"{name}.tflite"
            path.write_bytes(blob)
            probs.append(LiteRTRuntime(path).logits(test_x[:args.images]))
    atomic.write_json(args.out, {
        "run": str(args.run), "sparsity": cfg.sparsity, "allocation": cfg.sparsity_allocation,
        "measured_sparsity": compress.kernel_sparsity(model),
        "fp32_bytes": len(fp32), "int8_bytes": len(dense), "int8_sparse_bytes": len(sparse),
        "int8_ratio": len(dense) / len(fp32), "int8_sparse_ratio": len(sparse) / len(fp32),
        "identical_outputs": bool(np.array_equal(probs[0], probs[1])),
        "images": args.images, "provenance": provenance()})
    print(f"int8 {len(dense) / len(fp32):.1%} of fp32, with sparse encoding "
          f"{len(sparse) / len(fp32):.1%}; identical outputs: {np.array_equal(*probs)}")


if __name__ == "__main__":
    run_script(main)
