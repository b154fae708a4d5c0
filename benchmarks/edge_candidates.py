"""Edge-model candidates before training them: int8 size, MACs and batch-1 latency against
the shipped cnn, side by side.

Issue #16's edge model must be at most 100 KB as int8 TFLite, at most 10 MMAC per image, and
run at batch 1 on one thread in at most half the time of the cnn's int8. Size, MACs and
latency do not depend on the weights' values, so each candidate is checked untrained before
its 300-epoch recipe is spent on it: built from the registry with builder hyperparameters,
its BatchNorm statistics set on 2,000 training images (``onnx_activations.untrained_model``),
converted post-training with the export's converters (``export.convert.to_tflite`` int8 and
``to_onnx`` + ``onnx_int8_static`` with uint8 activations) on a 500-image representative
dataset, and timed through fmnist-edge's runtime beside the shipped ``default_int8`` files in
interleaved rounds (``peers.compare``; ``ratio`` columns: paired by round).

    python benchmarks/edge_candidates.py resnet8 cnn-half=cnn:widths=16,32,64 \\
        --out benchmarks/results/experiments/edge_candidates_<cpu>.json

A candidate is ``[LABEL=]ARCH[:KEY=V[,V...][;KEY=V...]]``: a registry name and builder
keyword arguments (integers; several make a tuple).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_activations  # noqa: E402  (sibling scripts)
import peers  # noqa: E402
import zoo  # noqa: E402

from fmnist_edge import atomic, data  # noqa: E402
from fmnist_edge.benchmark import machine, run_script  # noqa: E402
from fmnist_edge.predict import MODELS_DIR  # noqa: E402
from fmnist_edge.provenance import provenance  # noqa: E402

#: The bars of issue #16's edge model.
MAX_TFLITE_BYTES, MAX_MACS, MAX_LATENCY_RATIO = 102_400, 10_000_000, 0.5


def parse(spec: str) -> tuple[str, str, dict]:
    """``[LABEL=]ARCH[:KEY=V[,V...][;KEY=...]]`` -> ``(label, arch, kwargs)``.

    Raises:
        ValueError: a malformed spec (names it).
    """
    head, _, args = spec.partition(":")
    label, _, arch = head.rpartition("=")
    kwargs = {}
    for item in filter(None, args.split(";")):
        key, eq, values = item.partition("=")
        try:
            numbers = tuple(int(v) for v in values.split(","))
        except ValueError:
            numbers = ()
        if not eq or not key or not numbers:
            raise ValueError(f"candidate {spec!r}: builder arguments are KEY=INT[,INT...] "
                             "separated by ';'")
        kwargs[key] = numbers if len(numbers) > 1 else numbers[0]
    return label or arch, arch, kwargs


def convert(label: str, arch: str, kwargs: dict, images: np.ndarray, calibration: np.ndarray,
            work: Path) -> dict:
    """Build ``arch`` untrained and write its int8 TFLite and int8 ONNX (uint8 activations)
    under ``work/label``; returns the record without timings."""
    import onnx

    from fmnist_edge.export import convert as converters

    model = onnx_activations.untrained_model(arch, images, **kwargs)
    folder = work / label
    folder.mkdir()
    tflite = folder / "model_int8.tflite"
    tflite.write_bytes(converters.to_tflite(model, "int8", calibration))
    onnx_path = folder / "model_int8.onnx"
    onnx.save(converters.onnx_int8_static(converters.to_onnx(model), calibration, folder,
                                          activation_type="uint8"), onnx_path)
    return {"arch": arch, "kwargs": kwargs, "parameters": int(model.count_params()),
            "macs_per_image": zoo.count_macs(model), "tflite_int8_bytes": tflite.stat().st_size,
            "onnx_int8_bytes": onnx_path.stat().st_size, "files": [tflite, onnx_path]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    specs = [parse(spec) for spec in args.candidates]
    train_images = data.load_split("train", args.data_dir)[0]
    test_images = data.load_split("test", args.data_dir)[0][:256]
    calibration = train_images[-500:]
    shipped = [MODELS_DIR / "default_int8.tflite", MODELS_DIR / "default_int8.onnx"]
    with tempfile.TemporaryDirectory() as tmp:
        records = {label: convert(label, arch, kwargs, train_images[:2000], calibration,
                                  Path(tmp))
                   for label, arch, kwargs in specs}
        files = shipped + [f for r in records.values() for f in r["files"]]
        timed = peers.compare(files, test_images, rounds=args.rounds, calls=args.calls,
                              only={"fmnist-edge"})
        by_file = {row["model"]: row for row in timed["rows"]}
    for label, record in records.items():
        for fmt, path in zip(("tflite", "onnx"), record.pop("files")):
            reference = shipped[0] if fmt == "tflite" else shipped[1]
            mine = by_file[str(path)]["round_p50_us"]
            cnn = by_file[str(reference)]["round_p50_us"]
            record[f"{fmt}_p50_us"] = by_file[str(path)]["p50_us"]
            record[f"{fmt}_x_cnn_paired"] = float(np.median(np.asarray(mine) / np.asarray(cnn)))
        record["meets"] = {
            "tflite_bytes": record["tflite_int8_bytes"] <= MAX_TFLITE_BYTES,
            "macs": record["macs_per_image"] <= MAX_MACS,
            "latency_tflite": record["tflite_x_cnn_paired"] <= MAX_LATENCY_RATIO,
            "latency_onnx": record["onnx_x_cnn_paired"] <= MAX_LATENCY_RATIO}
        print(f"{label:16s} {record['parameters']:8,d} params {record['macs_per_image'] / 1e6:5.1f}"
              f" MMAC  tflite {record['tflite_int8_bytes']:8,d} B "
              f"{record['tflite_p50_us']:6.1f} us ({record['tflite_x_cnn_paired']:.2f}x cnn)"
              f"  onnx {record['onnx_p50_us']:6.1f} us ({record['onnx_x_cnn_paired']:.2f}x cnn)")
    cnn = {fmt: by_file[str(path)]["p50_us"] for fmt, path in zip(("tflite", "onnx"), shipped)}
    print(f"{'cnn (shipped)':16s} tflite {cnn['tflite']:6.1f} us  onnx {cnn['onnx']:6.1f} us")
    atomic.write_json(args.out, {
        "candidates": records, "cnn_p50_us": cnn, "rounds": args.rounds, "calls": args.calls,
        "bars": {"tflite_bytes": MAX_TFLITE_BYTES, "macs": MAX_MACS,
                 "latency_x_cnn": MAX_LATENCY_RATIO},
        "note": "untrained weights: size, MACs and latency only", "machine": machine(),
        "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
