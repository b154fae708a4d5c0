"""Where the bytes of a TFLite model go: constant tensors by type, quantization parameters,
and the rest (graph, strings, metadata), read with LiteRT's flatbuffer schema.

    python benchmarks/tflite_size.py runs/mobilenetv2/<id>/export/model_int8.tflite \\
        --reference runs/mobilenetv2/<id>/export/model_fp32.tflite \\
        --out benchmarks/results/tflite_size_mobilenetv2.json

An int8 model cannot be smaller than its int8 weights plus its int32 biases plus, with
per-channel quantization, one float32 scale and one int64 zero point per output channel of
every quantized tensor (the TFLite schema's ``QuantizationParameters``; TFLite 8-bit
quantization spec, https://ai.google.dev/edge/litert/models/quantization_spec). This script
measures that floor for a given file, as a fraction of ``--reference`` when given.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from fmnist_edge import atomic
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance

#: TFLite TensorType codes (schema.fbs) -> names, for the types our models use.
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 9: "int8"}
SCALE_BYTES, ZERO_POINT_BYTES = 4, 8  # float32 scale, int64 zero point (schema.fbs)


def breakdown(path: Path) -> dict:
    """Byte breakdown of the ``.tflite`` file at ``path``.

    Returns:
        ``{"file_bytes", "constant_bytes_by_type": {type: bytes}, "quantization_params":
        count of (scale, zero point) entries, "quantization_param_bytes", "per_channel_tensors",
        "other_bytes"}``; all sizes in bytes.

    Raises:
        ValueError: the file is not a TFLite flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    blob = path.read_bytes()
    if not schema.Model.ModelBufferHasIdentifier(blob, 0):
        raise ValueError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.Model.GetRootAs(blob, 0)
    by_type: Counter[str] = Counter()
    seen_buffers: set[int] = set()
    params = per_channel = 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            if tensor.Buffer() not in seen_buffers:
                seen_buffers.add(tensor.Buffer())
                name = TENSOR_TYPES.get(tensor.Type(), f"type{tensor.Type()}")
                by_type[name] += model.Buffers(tensor.Buffer()).DataLength()
            quant = tensor.Quantization()
            if quant is not None:
                params += max(quant.ScaleLength(), quant.ZeroPointLength())
                per_channel += quant.ScaleLength() > 1
    param_bytes = params * (SCALE_BYTES + ZERO_POINT_BYTES)
    return {"file_bytes": len(blob), "constant_bytes_by_type": dict(by_type),
            "quantization_params": params, "quantization_param_bytes": param_bytes,
            "per_channel_tensors": per_channel,
            "other_bytes": len(blob) - sum(by_type.values()) - param_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--reference", type=Path, help="fp32 .tflite to compare with")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {"model": str(args.model), **breakdown(args.model)}
    if args.reference:
        ref = args.reference.stat().st_size
        floor = (sum(result["constant_bytes_by_type"].values())
                 + result["quantization_param_bytes"])
        result.update({"reference": str(args.reference), "reference_bytes": ref,
                       "size_ratio": result["file_bytes"] / ref,
                       "floor_ratio_constants_and_qparams": floor / ref})
    result["provenance"] = provenance()
    atomic.write_json(args.out, result)
    print({k: v for k, v in result.items() if k != "provenance"})


if __name__ == "__main__":
    run_script(main)
