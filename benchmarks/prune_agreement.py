"""How the export's fine-tuning recipe keeps the float model's predictions: for each setting,
prune (and optionally QAT-fine-tune) a trained run and measure, on the *validation* split
(never the test set: this chooses the export defaults), top-1 agreement with the float model
and top-1 accuracy of the pruned float model, of the QAT model (fake-quant, in Keras) and,
with ``ptq=1``, of the post-training full-integer TFLite of the pruned float model (LiteRT).

    python benchmarks/prune_agreement.py runs/cnn/RUN \\
        --setting prune_epochs=2,lr=1e-4,temperature=1 \\
        --setting prune_epochs=4,lr=3e-4,temperature=4,qat_epochs=2 \\
        --setting sparsity=0,ptq=1          # what int8 PTQ alone costs
        --out benchmarks/results/experiments/prune_agreement_cnn.json

Settings not given take the ExportConfig defaults (sparsity, batch size, seed). Results are
written after every setting, so a long sweep keeps what it finished.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from fmnist_edge import atomic, data, runs  # noqa: E402
from fmnist_edge.contract import softmax  # noqa: E402
from fmnist_edge.export import compress  # noqa: E402
from fmnist_edge.export.config import ExportConfig  # noqa: E402
from fmnist_edge.provenance import provenance  # noqa: E402
from fmnist_edge.train.config import TrainConfig  # noqa: E402
from fmnist_edge.train.keras_shim import keras  # noqa: E402
from fmnist_edge.train.trainer import predict_logits  # noqa: E402

_KEYS = {"prune_epochs": int, "qat_epochs": int, "lr": float, "temperature": float,
         "sparsity": float, "online": int, "freeze_bn": int,
         "keep_ends": int, "allocation": str, "ptq": int, "fold_bn": int,
         "granularity": str, "optimizer": str, "calibration": str}


def parse_setting(text: str) -> dict:
    """``"prune_epochs=4,lr=3e-4"`` -> ``{"prune_epochs": 4, "lr": 0.0003}`` (typed)."""
    setting = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in _KEYS:
            raise SystemExit(f"unknown setting {key!r}; choose from {sorted(_KEYS)}")
        setting[key] = _KEYS[key](value)
    return setting


def run_setting(model_path: Path, setting: dict, x_tr, x_val, y_val, ref_val, teacher_logits,
                defaults: ExportConfig, augment=None) -> dict:
    temperature = setting.get("temperature", defaults.distill_temperature)
    targets = softmax(teacher_logits / temperature)
    keras.utils.set_random_seed(defaults.seed)
    report = compress.CompressionReport()
    # online=1: the teacher labels each augmented batch on the fly (the run's augmentation).
    online = bool(setting.get("online", 0))
    tune = dict(lr=setting.get("lr", defaults.lr), batch_size=defaults.batch_size,
                optimizer=setting.get("optimizer", defaults.optimizer),
                augment=augment if online else None, seed=defaults.seed, label_smoothing=0.0,
                temperature=temperature, report=report,
                teacher=keras.models.load_model(model_path, compile=False) if online else None)
    start = time.perf_counter()
    work = keras.models.load_model(model_path, compile=False)
    if setting.get("freeze_bn"):  # BatchNorm in inference mode during fine-tuning
        work = compress.freeze_batchnorm(work)
    if setting.get("fold_bn"):  # prune the BatchNorm-folded kernels (what int8 multiplies)
        work = compress.fold_batchnorm(work)
    sparsity = setting.get("sparsity", defaults.sparsity)
    if sparsity > 0:
        keep = compress.end_layers(work) if setting.get("keep_ends") else ()
        work = compress.prune(work, x_tr, targets, sparsity=sparsity, keep_dense=keep,
                              allocation=setting.get("allocation", defaults.sparsity_allocation),
                              epochs=setting.get("prune_epochs", defaults.prune_epochs), **tune)

    def score(top1) -> dict:
        return {"val_agreement": float((top1 == ref_val).mean()),
                "val_top1": float((top1 == y_val).mean())}

    pruned_val = predict_logits(work, x_val).argmax(1)
    result = {"setting": setting, "pruned_float": score(pruned_val),
              "measured_sparsity": report.measured_sparsity}
    if setting.get("ptq"):
        # calibration=minmax+moving_average: each method on the same pruned model
        methods = setting.get("calibration", defaults.calibration_method).split("+")
        for method in methods:
            key = "ptq_tflite_int8" + (f"_{method}" if len(methods) > 1 else "")
            result[key] = _score_ptq(work, x_tr, x_val, y_val, ref_val, defaults, pruned_val,
                                     setting.get("granularity", "channel"), method)
    qat_epochs = setting.get("qat_epochs", 0)
    if qat_epochs:
        qat = compress.quantize_aware(work, x_tr, targets, pruned=sparsity > 0,
                                      epochs=qat_epochs, **tune)
        result["qat"] = score(predict_logits(qat, x_val).argmax(1))
    result["time_s"] = time.perf_counter() - start
    return result


def _score_ptq(model, x_tr, x_val, y_val, ref_val, defaults: ExportConfig,
               pruned_val=None, weight_granularity: str = "channel",
               calibration_method: str = "minmax") -> dict:
    """Post-training int8 TFLite of ``model`` (calibration drawn as the export draws it),
    scored on validation with LiteRT: agreement with the float model, top-1, and agreement
    with ``model`` itself (``pruned_val``: its top-1 classes; what quantization alone changes).
    ``weight_granularity`` ``channel``: the TFLite converter; else ai-edge-quantizer with
    that per-layer granularity (``export.granularity``) and ``calibration_method``, as the
    export makes them.
    """
    import tempfile

    from fmnist_edge.export import convert
    from fmnist_edge.runtime import load

    calibration = defaults.calibration_images(x_tr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ptq.tflite"
        if weight_granularity == "channel":
            path.write_bytes(convert.to_tflite(model, "int8", calibration, defaults.int8_io))
        else:
            from fmnist_edge.export import granularity

            blob = convert.to_tflite(model, "fp32")
            path.write_bytes(granularity.quantize_int8(
                blob, calibration, granularity.plan(blob, weight_granularity),
                calibration_method))
        top1 = load(path).logits(x_val).argmax(1)
    scores = {"val_agreement": float((top1 == ref_val).mean()),
              "val_top1": float((top1 == y_val).mean())}
    if pruned_val is not None:
        scores["val_agreement_with_pruned_float"] = float((top1 == pruned_val).mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--setting", action="append", required=True, type=parse_setting)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    model_path = runs.resolve_model(args.run)
    config_path = model_path.parent / runs.CONFIG_FILE
    train_cfg = TrainConfig.read(config_path) if config_path.is_file() else TrainConfig()
    x, y = data.load_split("train", args.data_dir)
    train_idx, val_idx = data.stratified_split(y, train_cfg.val_size, seed=train_cfg.seed)
    x_tr, x_val, y_val = x[train_idx], x[val_idx], y[val_idx]
    reference = keras.models.load_model(model_path, compile=False)
    teacher_logits = predict_logits(reference, x_tr)
    ref_val_logits = predict_logits(reference, x_val)
    ref_val = ref_val_logits.argmax(1)
    out = {"source_model": str(model_path),
           "reference_val_top1": float((ref_val == y_val).mean()),
           "num_val_images": int(len(y_val)), "defaults": ExportConfig().to_dict(),
           "results": [], "provenance": provenance()}
    for setting in args.setting:
        print(f"setting {setting}", flush=True)
        out["results"].append(run_setting(model_path, setting, x_tr, x_val, y_val, ref_val,
                                          teacher_logits, ExportConfig(), train_cfg.augment))
        print(out["results"][-1], flush=True)
        atomic.write_json(args.out, out)


if __name__ == "__main__":
    main()
