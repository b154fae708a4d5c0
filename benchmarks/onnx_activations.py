"""int8 ONNX with int8 or uint8 activations: accuracy and batch-1 latency on this CPU.

Which QDQ activation type onnxruntime fuses into its fastest integer kernels depends on the
CPU and the graph, so the export makes each (``ExportConfig.onnx_activations``) and keeps the
fastest way that keeps the float model's predictions (``export.make.choose``). This script
shows what that choice is made of for runs whose only surviving artifact is their fp32 ONNX:
each file is quantized post-training with the export's own quantizer
(``export.convert.onnx_int8_static``), representative dataset and validation split, once per
activation type, and every way is scored on the validation and test splits and timed at
batch 1, one thread, in interleaved rounds beside the fp32 file (``export.make.time_ways``).

    python benchmarks/onnx_activations.py benchmarks/artifacts/cnn/model_fp32.onnx \\
        benchmarks/artifacts/mlp/model_fp32.onnx \\
        --out benchmarks/results/experiments/onnx_activation_types.json \\
        [--ship fmnist_edge/models/default_int8.onnx]

With ``--ship``, the first file's way that the export's rule picks (``export.make.pick``)
replaces that file; its card (embedded and sidecar) is updated with the scores of every way.

With ``--untrained ARCH`` (needs TensorFlow) an architecture with no surviving run is built
from the registry, its BatchNorm statistics set on 2,000 training images, and converted with
the export's tf2onnx path: its ways are timed only (latency does not depend on the weights'
values; accuracy would be meaningless).

    python benchmarks/onnx_activations.py --untrained mobilenetv2 \
        --out benchmarks/results/experiments/onnx_activation_types_mobilenetv2_untrained.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.export import convert, make
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load
from fmnist_edge.runtime.card import file_sha256


def measure(fp32: Path, config: ExportConfig, splits: dict[str, tuple[np.ndarray, np.ndarray]],
            calibration: np.ndarray, work: Path, *, score: bool = True
            ) -> tuple[dict, dict[str, Path]]:
    """Quantize ``fp32`` once per activation type of ``config``, time each way (and with
    ``score``, score it on ``splits``).

    Returns:
        ``{way: {val_top1, val_agreement_with_fp32, test_top1, test_agreement_with_fp32,
        p50_us}}`` (``fp32`` included, its agreement 1.0; only ``p50_us`` without ``score``)
        and the file of each way.
    """
    import onnx

    proto = onnx.load(fp32)
    paths = {"fp32": fp32}
    for activations in config.onnx_activations:
        sub = work / f"{fp32.parent.name}-{activations}"
        sub.mkdir()
        path = sub / "model_int8.onnx"
        path.write_bytes(convert.onnx_int8_static(
            proto, calibration, sub, activation_type=activations).SerializeToString())
        paths[f"ptq/{activations}"] = path
    rows: dict[str, dict[str, float]] = {way: {} for way in paths}
    predicted: dict[str, dict[str, np.ndarray]] = {}
    for way, path in paths.items() if score else ():
        rt = load(path, verify=False)
        predicted[way] = {split: rt.logits(x).argmax(1) for split, (x, _) in splits.items()}
    for way, by_split in predicted.items():  # "fp32" first: the reference
        for split, (_, y) in splits.items():
            rows[way][f"{split}_top1"] = float((by_split[split] == y).mean())
            rows[way][f"{split}_agreement_with_fp32"] = float(
                (by_split[split] == predicted["fp32"][split]).mean())
    for way, p50 in make.time_ways(paths, splits["val"][0][:64]).items():
        rows[way]["p50_us"] = p50
    return rows, paths


def untrained_model(arch: str, images: np.ndarray, **kwargs):
    """The registered ``arch`` (builder hyperparameters ``kwargs``), untrained, its
    BatchNorm moving statistics set by forward passes in training mode over
    ``uint8[N, 28, 28]`` images, so that activation ranges are realistic for calibration.
    Latency does not depend on the weights' values; accuracy is meaningless."""
    from fmnist_edge.train import architectures
    from fmnist_edge.train.keras_shim import tf

    model = architectures.build(arch, **kwargs)
    for start in range(0, len(images), 200):
        model(tf.constant(images[start:start + 200, ..., None], tf.float32), training=True)
    return model


def untrained_onnx(arch: str, images: np.ndarray, work: Path) -> Path:
    """fp32 ONNX of :func:`untrained_model` ``arch``, converted with the export's
    ``export.convert.to_onnx``."""
    import onnx

    model = untrained_model(arch, images)
    path = work / f"{arch}-untrained" / "model_fp32.onnx"
    path.parent.mkdir()
    onnx.save(convert.to_onnx(model), path)
    return path


def ship(target: Path, rows: dict, paths: dict[str, Path], config: ExportConfig) -> dict:
    """Replace ``target`` (a shipped int8 ONNX with a sidecar card) with the way the export's
    rule picks among the int8 ways of ``rows``; returns what was shipped."""
    import onnx

    scores = {way: {"agreement_with_float": r["val_agreement_with_fp32"],
                    "top1_accuracy": r["val_top1"], "p50_us": r["p50_us"]}
              for way, r in rows.items() if way != "fp32"}
    way = make.pick(scores, config.agreement_slack, config.min_speedup)
    sidecar = target.with_name(target.name + ".json")
    card = json.loads(sidecar.read_text())
    card["test_accuracy"] = rows[way]["test_top1"]
    card["extra"]["io"].update(method=way, method_errors={}, validation_by_method=scores,
                               requantized_by="benchmarks/onnx_activations.py")
    embedded = {k: v for k, v in card.items() if k != "sha256"}
    blob = convert.set_onnx_card(onnx.load(paths[way]), embedded).SerializeToString()
    atomic.write_bytes(target, blob)
    card["sha256"] = file_sha256(target)
    atomic.write_json(sidecar, card)
    return {"way": way, "file": str(target), "sha256": card["sha256"],
            "size_bytes": target.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path, nargs="*", help="fp32 .onnx files")
    parser.add_argument("--untrained", metavar="ARCH",
                        help="also time an untrained registered architecture (latency only)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--ship", type=Path,
                        help="replace this int8 file with the first fp32 file's chosen way")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    config = ExportConfig()
    x, y = data.load_split("train", args.data_dir)
    train_idx, val_idx = data.train_val_indices(y, val_size=config.val_size, seed=config.seed)
    calibration = config.calibration_images(x[train_idx])
    splits = {"val": (x[val_idx], y[val_idx]), "test": data.load_split("test", args.data_dir)}
    result = {"calibration_images": len(calibration), "machine": machine(), "models": {},
              "rule": {"agreement_slack": config.agreement_slack,
                       "min_speedup": config.min_speedup}}
    if not args.fp32 and not args.untrained:
        parser.error("give fp32 .onnx files, --untrained ARCH, or both")
    with tempfile.TemporaryDirectory() as tmp:
        models = [(fp32, True) for fp32 in args.fp32]
        if args.untrained:
            models.append((untrained_onnx(args.untrained, x[train_idx[:2000]], Path(tmp)),
                           False))
            result["untrained"] = {"arch": args.untrained, "batchnorm_images": 2000,
                                   "note": "untrained weights: latency only"}
        for i, (fp32, score) in enumerate(models):
            rows, paths = measure(fp32, config, splits, calibration, Path(tmp), score=score)
            result["models"][str(fp32) if score else args.untrained] = rows
            for way, r in rows.items():
                scores = (f"test {r['test_top1']:.2%}  val agreement "
                          f"{r['val_agreement_with_fp32']:.2%}  " if score else "")
                print(f"{fp32.parent.name:20s} {way:11s} {scores}p50 {r['p50_us']:7.1f} us")
            if args.ship and i == 0 and score:
                result["shipped"] = ship(args.ship, rows, paths, config)
                print(f"shipped: {result['shipped']}")
    result["provenance"] = provenance()
    atomic.write_json(args.out, result)


if __name__ == "__main__":
    run_script(main)
