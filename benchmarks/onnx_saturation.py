"""ONNX int8 on x86 CPUs without VNNI: 8-bit weights saturate, 7-bit weights do not.

onnxruntime's int8 kernels on AVX2 (and AVX-512 without VNNI) add each pair of uint8 x int8
products in int16 with saturation (VPMADDUBSW), so a model quantized with full 8-bit weights
can lose accuracy on those CPUs only; onnxruntime's ``reduce_range`` (7-bit weights) avoids it
(onnxruntime docs, "Quantize ONNX models"). This script scores, on the machine it runs on,
int8 ONNX models of one run made three ways, with the export's own quantizer
(``export.convert.onnx_int8_static``), representative dataset and validation split:

- ``as shipped``: the existing int8 file (``--int8``);
- ``fp32, 8-bit weights`` / ``fp32, 7-bit weights``: the run's fp32 ONNX (``--fp32``),
  quantized post-training.

(An int8 file's own weights cannot simply be quantized again: onnxruntime's QDQ graphs drop
the ReLUs that the activations' quantized range already clips, so stripping the Q/DQ nodes
does not give the float model back.)

    python benchmarks/onnx_saturation.py --fp32 benchmarks/artifacts/cnn/model_fp32.onnx \\
        --int8 fmnist_edge/models/default_int8.onnx \\
        --out benchmarks/results/experiments/onnx_int8_saturation_avx2.json

(Its ``--ship`` option, which re-quantized the shipped file in 7 bits, is now
``benchmarks/onnx_activations.py --ship``: 7-bit weights and the activation type the export
chooses.)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import run_script
from fmnist_edge.export import convert
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def cpu_flags() -> dict[str, bool]:
    """The x86 features that decide onnxruntime's int8 kernels (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import onnx

    config = ExportConfig()
    x, y = data.load_split("train", args.data_dir)
    x_test, y_test = data.load_split("test", args.data_dir)
    train_idx, val_idx = data.train_val_indices(y, val_size=config.val_size, seed=config.seed)
    calibration = config.calibration_images(x[train_idx])
    x_val, y_val = x[val_idx], y[val_idx]
    float_model = load(args.fp32, verify=False)
    reference = float_model.logits(x_val).argmax(1)
    test_reference = float_model.logits(x_test).argmax(1)
    fp32 = onnx.load(args.fp32)
    shipped = onnx.load(args.int8)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def quantize(proto, reduce_range):
            sub = Path(tempfile.mkdtemp(dir=work))
            return convert.onnx_int8_static(proto, calibration, sub, reduce_range=reduce_range)

        ways = {"as shipped": shipped,
                "fp32, 8-bit weights": quantize(fp32, False),
                "fp32, 7-bit weights": quantize(fp32, True)}
        rows = {}
        for name, proto in ways.items():
            path = work / (name.replace(" ", "_").replace(",", "") + ".onnx")
            path.write_bytes(proto.SerializeToString())
            runtime = load(path, verify=False)
            val = runtime.logits(x_val).argmax(1)
            test = runtime.logits(x_test).argmax(1)
            rows[name] = {
                "weight_max_abs": convert.int8_weight_range(proto),
                "test_top1": float((test == y_test).mean()),
                "test_agreement_with_fp32": float((test == test_reference).mean()),
                "val_top1": float((val == y_val).mean()),
                "val_agreement_with_fp32": float((val == reference).mean())}
        fp32_test = float((test_reference == y_test).mean())
        result = {"fp32": str(args.fp32), "int8": str(args.int8), "fp32_test_top1": fp32_test,
                  "cpu_flags": cpu_flags(), "ways": rows,
                  "calibration_images": len(calibration), "provenance": provenance()}
    atomic.write_json(args.out, result)
    for name, r in rows.items():
        print(f"{name:22s} |q|max {r['weight_max_abs']:3d}  test {r['test_top1']:.2%}  "
              f"val agreement {r['val_agreement_with_fp32']:.2%}")
    print(f"fp32 test {fp32_test:.2%}; cpu {result['cpu_flags']}")


if __name__ == "__main__":
    run_script(main)
