"""``fmnist-edge export``: compress, convert, verify parity, write ``<run>/export/``.

The whole export folder is assembled in a temporary sibling folder and renamed into place at
the end, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist_edge import atomic, data, runs
from fmnist_edge.contract import LABELS, MODEL_INPUT_SHAPE, ModelCard, softmax
from fmnist_edge.export import compress, convert, granularity, parity, report
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.formats import FORMATS
from fmnist_edge.provenance import package_versions, provenance
from fmnist_edge.runtime import ModelFileError, load
from fmnist_edge.runtime.card import sidecar_path
from fmnist_edge.train.config import AugmentConfig, TrainConfig
from fmnist_edge.train.keras_shim import keras
from fmnist_edge.train.trainer import predict_logits

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
PACKAGES = ("fmnist-edge", "tensorflow", "tf-keras", "tensorflow-model-optimization",
            "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "ai-edge-quantizer", "numpy")


class ExportError(RuntimeError):
    """The export could not be made (existing output, unreadable model, ...)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its parity record, and whether the gate passed."""

    out_dir: Path
    parity: dict[str, Any]
    passed: bool


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved_keras_version(path: Path) -> str | None:
    """The Keras version a ``.keras`` archive records in its ``metadata.json`` (``None`` when
    it is not such an archive)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json")).get("keras_version"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _load_keras(path: Path) -> keras.Model:
    version = saved_keras_version(path)
    if version and version.split(".")[0] != keras.__version__.split(".")[0]:
        raise ModelFileError(
            f"{path}: saved with Keras {version}; fmnist-edge exports tf_keras "
            f"{keras.__version__} models (tfmot's pruning and QAT need Keras 2). Fix: build "
            "and save the model with `import tf_keras as keras` (or train it with "
            "`fmnist-edge train`), then export that file")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for bad archives
        raise ModelFileError(f"{path}: not a readable Keras model ({exc}); "
                             "train again or pass another run") from exc


def _train_config(run_dir: Path) -> TrainConfig | None:
    path = run_dir / runs.CONFIG_FILE
    return TrainConfig.read(path) if path.is_file() else None


def _tflite_io(path: Path) -> dict[str, Any]:
    rt = load(path)
    return {"input_dtype": str(rt.input_dtype), "input_scale": float(rt.input_scale),
            "input_zero_point": int(rt.input_zero_point),
            "output_scale": float(rt.output_scale),
            "output_zero_point": int(rt.output_zero_point)}


def check_output_dir(out: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder the export must not write or replace.

    ``--overwrite`` replaces only an export folder this tool wrote (it holds a
    ``manifest.json`` with ``artifacts`` and ``gate``), never the run folder, a folder that
    contains the run, or anything else.

    Raises:
        ExportError: ``out`` is a file, exists without ``overwrite``, or is not ours to
            replace.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder; choose a folder path")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    resolved, run = out.resolve(), run_dir.resolve()
    if resolved == run or resolved in run.parents:
        raise ExportError(f"refusing to replace {out}: it holds the run folder {run_dir}; "
                          f"choose an --out of its own (default {run_dir / EXPORT_DIR})")
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        ours = isinstance(manifest, dict) and {"artifacts", "gate"} <= set(manifest)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ExportError(f"refusing to replace {out}: it is not an export folder written by "
                          "fmnist-edge (no manifest.json); choose another --out or move it "
                          "away yourself")


def export_run(source: str | Path | None, config: ExportConfig, *,
               data_dir: str | Path | None = None,
               runs_dir: str | Path = runs.DEFAULT_RUNS_DIR,
               out_dir: str | Path | None = None, overwrite: bool = False,
               verbose: int = 0) -> ExportResult:
    """Export a trained run: prune + QAT, convert, verify parity on the full test set.

    Args:
        source: run folder or ``.keras`` file (``None``: the newest run under ``runs_dir``).
        config: export settings.
        data_dir: Fashion-MNIST folder (else located as in :func:`fmnist_edge.data.locate`).
        runs_dir: where to look for the newest run.
        out_dir: output folder (default ``<run>/export``).
        overwrite: replace an existing export folder.
        verbose: Keras verbosity of the fine-tuning epochs (stages are logged at INFO).

    Returns:
        :class:`ExportResult`; ``passed`` is False when an artifact failed the gate (the
        folder is still written, with the failure recorded in parity.json/parity.md).

    Raises:
        fmnist_edge.runs.RunError: no such run / model.
        fmnist_edge.runtime.ModelFileError: unreadable or non-conforming model.
        ExportError: output exists and ``overwrite`` is false.
        fmnist_edge.data.DataError: missing or corrupt data.
    """
    start = time.perf_counter()
    # Taken now, not when the export ends: the commit of the code that runs (an export of a
    # large model takes an hour, and the checkout may move meanwhile).
    prov = provenance()
    model_path = runs.resolve_model(source if source is not None else runs.newest_run(runs_dir))
    run_dir = model_path.parent
    out = Path(out_dir) if out_dir else run_dir / EXPORT_DIR
    check_output_dir(out, run_dir, overwrite)
    reference = _load_keras(model_path)
    if tuple(reference.input_shape) != MODEL_INPUT_SHAPE or reference.output_shape != (None, 10):
        raise ModelFileError(f"{model_path}: maps {reference.input_shape} -> "
                             f"{reference.output_shape}, not the contract")

    train_cfg = _train_config(run_dir)
    val_size = train_cfg.val_size if train_cfg else config.val_size
    split_seed = train_cfg.seed if train_cfg else config.seed
    augment = train_cfg.augment if train_cfg else AugmentConfig()
    smoothing = train_cfg.label_smoothing if train_cfg else 0.0
    x, y = data.load_split("train", data_dir)
    x_test, y_test = data.load_split("test", data_dir)
    train_idx, val_idx = data.stratified_split(y, val_size, seed=split_seed)
    if config.train_limit and config.train_limit < len(train_idx):
        _, keep = data.stratified_split(y[train_idx], config.train_limit, seed=config.seed)
        train_idx = train_idx[keep]
    x_tr, y_tr, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if train_cfg is not None and train_cfg.photo_augment > 0:
        # A run trained on the photo pool is fine-tuned and calibrated on it too, so pruning
        # and the int8 ranges keep what it learnt about converted real photos.
        from fmnist_edge.train.photo_pool import build_pool

        pool, pooled = build_pool(x_tr, y_tr, size=min(train_cfg.photo_pool_size, len(x_tr)),
                                  seed=train_cfg.seed, log=log.info)
        log.info("fine-tuning and calibration include %d photo-pool images", len(pool))
        x_tr, y_tr = np.concatenate([x_tr, pool]), np.concatenate([y_tr, y_tr[pooled]])
    calibration = config.calibration_images(x_tr)
    keras.utils.set_random_seed(config.seed)

    with atomic.sigterm_as_interrupt(), atomic.staged_dir(out) as stage:
        result = _export_into(stage, model_path, reference, config, x_tr, y_tr, x_val, y_val,
                              x_test, y_test, calibration, augment, smoothing, start, prov,
                              verbose)
    return ExportResult(out, result, result["gate"]["status"] == "passed")


def _pruned_float_record(pruned: np.ndarray, reference: np.ndarray, labels: np.ndarray,
                         artifacts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Split the int8 models' disagreement with the float model into its two stages.

    Args:
        pruned: ``float32[N, 10]`` logits of the pruned float Keras model (before quantization).
        reference: ``float32[N, 10]`` logits of the float (unpruned) Keras model.
        labels: ``uint8[N]`` test labels.
        artifacts: ``{format: float32[N, 10]}`` logits of the exported artifacts.

    Returns:
        ``top1_accuracy`` and ``top1_agreement`` (with the float model) of the pruned float
        model, and ``int8_agreement``: ``{format: top-1 agreement with the pruned float
        model}`` for the quantized artifacts (what quantization alone changes).
    """
    top = pruned.argmax(1)
    return {"top1_accuracy": float((top == labels).mean()),
            "top1_agreement": float((top == reference.argmax(1)).mean()),
            "int8_agreement": {name: float((lg.argmax(1) == top).mean())
                               for name, lg in artifacts.items() if FORMATS[name].quantized}}


def _export_into(stage: Path, model_path: Path, reference: keras.Model, config: ExportConfig,
                 x_tr, y_tr, x_val, y_val, x_test, y_test, calibration, augment, smoothing,
                 start: float, prov: dict[str, Any], verbose: int = 0) -> dict[str, Any]:
    formats = [FORMATS[f] for f in config.formats]
    ref_logits = predict_logits(reference, x_test)
    ref_accuracy = float((ref_logits.argmax(1) == y_test).mean())
    base_card = {"name": reference.name, "labels": list(LABELS),
                 "input_spec": ModelCard().input_spec, "source_run": str(model_path.parent),
                 "reference_test_accuracy": ref_accuracy}
    files: dict[str, Path] = {}
    notes: dict[str, Any] = {}
    comp = compress.CompressionReport()
    pruned_logits = None

    # Float artifacts: exact conversions of the reference model.
    for fmt in formats:
        if fmt.quantized:
            continue
        path = stage / fmt.filename
        log.info("converting %s", fmt.name)
        if fmt.suffix == ".tflite":
            blob = convert.to_tflite(reference, fmt.name.split("-", 1)[1])
            atomic.write_bytes(path, convert.add_tflite_metadata(
                blob, {**base_card, "format": fmt.name}))
        else:
            proto = convert.set_onnx_card(convert.to_onnx(reference),
                                          {**base_card, "format": fmt.name})
            atomic.write_bytes(path, proto.SerializeToString())
        files[fmt.name] = path

    # int8 artifacts: prune (optional) + QAT, then convert.
    if any(f.quantized for f in formats):
        work = _load_keras(model_path)  # pruning mutates the layers it wraps
        if config.freeze_batchnorm:
            work = compress.freeze_batchnorm(work)
        temperature = config.distill_temperature if config.distill else 1.0
        if config.distill:  # targets: the float model's probabilities on the same images
            targets = softmax(predict_logits(reference, x_tr) / temperature)
        else:
            targets = y_tr
        # Distillation targets are the float model's outputs on the clean images, so the
        # student sees those same clean images; label training keeps the run's augmentation.
        tune = dict(lr=config.lr, batch_size=config.batch_size,
                    augment=None if config.distill else augment, seed=config.seed,
                    label_smoothing=0.0 if config.distill else smoothing,
                    temperature=temperature, report=comp, optimizer=config.optimizer,
                    verbose=verbose)
        if config.sparsity > 0:
            log.info("pruning to %.0f%% sparsity, %d epochs on %d images",
                     100 * config.sparsity, config.prune_epochs, len(x_tr))
            if config.fold_batchnorm:
                work = compress.fold_batchnorm(work)
            keep = compress.end_layers(work) if config.keep_ends_dense else ()
            work = compress.prune(work, x_tr, targets, sparsity=config.sparsity,
                                  epochs=config.prune_epochs, keep_dense=keep,
                                  allocation=config.sparsity_allocation, **tune)
        float_compressed = work
        # its float TFLite: gzip size of the pruned model and input of post-training int8
        compressed_tflite = convert.to_tflite(work, "fp32")
        if config.sparsity > 0:
            # What pruning alone costs in predictions (the int8 agreement then splits into a
            # pruning and a quantization part) and buys in transport: gzip of the pruned vs
            # the unpruned float model, both as TFLite fp32.
            pruned_logits = predict_logits(work, x_test)
            pruned_gzip = len(gzip.compress(compressed_tflite, 9))
            dense_gzip = len(gzip.compress(convert.to_tflite(reference, "fp32"), 9))
            notes["sparsity"] = {"pruned_fp32_tflite_gzip_bytes": pruned_gzip,
                                 "dense_fp32_tflite_gzip_bytes": dense_gzip,
                                 "gzip_ratio": pruned_gzip / dense_gzip}
        qat = None
        if config.qat_epochs:
            log.info("quantization-aware training, %d epochs", config.qat_epochs)
            qat = compress.quantize_aware(work, x_tr, targets, pruned=config.sparsity > 0,
                                          epochs=config.qat_epochs, **tune)
        ref_val = predict_logits(reference, x_val)
        for name in ("tflite-int8", "onnx-int8"):
            if name in config.formats:
                log.info("converting %s (QAT and post-training; best on validation)", name)
                makers, plan = _int8_makers(name, qat, float_compressed, compressed_tflite,
                                            calibration, config, base_card)
                files[name], notes[name] = _best_int8(stage, name, makers, x_val, y_val,
                                                      ref_val)
                if plan is not None and notes[name]["method"] == "ptq":
                    notes[name]["weight_granularity"] = plan.to_dict()
        if "tflite-int8" in files:
            notes["tflite-int8"].update(_tflite_io(files["tflite-int8"]))

    # Cards (JSON sidecars with sha256) and parity on the full test set.
    records, logits = [], {}
    for fmt in formats:
        path = files[fmt.name]
        log.info("parity: %s on %d test images", fmt.name, len(y_test))
        record, logits[fmt.name] = parity.measure(path, fmt.name, x_test, y_test, ref_logits,
                                                  latency_runs=config.latency_runs)
        parity.judge(record, max_accuracy_drop=config.max_accuracy_drop,
                     float_atol=config.float_atol, max_class_drop=config.max_class_drop)
        records.append(record)
        card = ModelCard(name=reference.name, format=fmt.name, source_run=str(model_path.parent),
                         test_accuracy=record.top1_accuracy, sha256=_sha256(path),
                         extra={"reference_test_accuracy": ref_accuracy,
                                **({"io": notes[fmt.name]} if fmt.name in notes else {})})
        atomic.write_text(sidecar_path(path), card.to_json() + "\n")
    passed = all(r.passed for r in records)
    result: dict[str, Any] = {
        "source_model": str(model_path),
        "num_test_images": int(len(y_test)),
        "reference": {"format": "keras", "top1_accuracy": ref_accuracy,
                      "parameters": int(reference.count_params())},
        "artifacts": [parity.to_dict(r) for r in records],
        "gate": {"status": "passed" if passed else "failed",
                 "max_accuracy_drop_pp": config.max_accuracy_drop,
                 "max_class_drop_pp": config.max_class_drop,
                 "float_atol": config.float_atol},
    }
    if "tflite-int8" in logits and "onnx-int8" in logits:
        result["cross_runtime_int8_agreement"] = float(
            (logits["tflite-int8"].argmax(1) == logits["onnx-int8"].argmax(1)).mean())
    if "sparsity" in notes:
        result["sparsity_gzip"] = notes["sparsity"]
    if pruned_logits is not None:
        result["pruned_float"] = _pruned_float_record(pruned_logits, ref_logits, y_test,
                                                      logits)
    result["int8_per_class_delta_pp"] = {
        r.format: r.per_class_accuracy_delta_pp for r in records if FORMATS[r.format].quantized}
    atomic.write_json(stage / "parity.json", result)
    atomic.write_text(stage / "parity.md", report.markdown(result))
    report.plot(result, stage / "parity.png")
    manifest = {
        "source_model": str(model_path),
        "source_sha256": _sha256(model_path),
        "labels": list(LABELS),
        "input": {"shape": [None, 28, 28, 1], "dtype": "float32",
                  "range": "raw pixels 0-255, dark background (int8 models: see io)"},
        "output": {"shape": [None, 10], "meaning": "logits"},
        "config": config.to_dict(),
        "compression": asdict(comp),
        "artifacts": {
            name: {"file": path.name, "format": name, "sha256": _sha256(path),
                   "size_bytes": path.stat().st_size, "runtime": FORMATS[name].runtime,
                   "quantized": FORMATS[name].quantized, **notes.get(name, {})}
            for name, path in files.items()},
        "sparsity_gzip": notes.get("sparsity"),
        "gate": result["gate"],
        "versions": package_versions(PACKAGES),
        "provenance": prov,
        "export_time_s": time.perf_counter() - start,
    }
    atomic.write_json(stage / "manifest.json", manifest)
    atomic.write_json(stage / "export_config.json", config.to_dict())
    return result


def _int8_makers(name: str, qat, float_compressed, compressed_tflite: bytes,
                 calibration: np.ndarray, config: ExportConfig, card: dict[str, Any]
                 ) -> tuple[dict[str, Callable[[Path], bytes]], Any]:
    """The ways to make one int8 artifact, each a function ``work_dir -> file bytes``, and
    the post-training TFLite's weight granularity plan (None when it is all per-channel).

    ``qat``: the QAT model converted by the TFLite converter (its learned ranges; ranges it
    lacks are calibrated), or for ONNX: tf2onnx of the QAT model with its fake-quant nodes
    stripped (the weights QAT trained) quantized by onnxruntime ``quantize_static``.
    ``ptq``: post-training full-integer quantization of the compressed float model (TFLite:
    the converter with a representative dataset for ``weight_granularity`` ``channel``,
    else ai-edge-quantizer on ``compressed_tflite``, the fp32 TFLite flatbuffer of
    ``float_compressed``, with per-layer granularity, :mod:`export.granularity`; ONNX:
    ``quantize_static``), calibrated on ``calibration`` (TFLite post-training quantization
    guide; onnxruntime "Quantize ONNX models"). Without QAT (``qat`` is None) only ``ptq``.
    """
    plan = None

    def tflite(model, method):
        return lambda work: convert.add_tflite_metadata(
            convert.to_tflite(model, "int8", calibration, config.int8_io),
            {**card, "format": name, "method": method})

    def onnx(make_float, method):
        def make(work: Path) -> bytes:
            proto = convert.onnx_int8_static(make_float(), calibration, work)
            return convert.set_onnx_card(
                proto, {**card, "format": name, "method": method}).SerializeToString()
        return make

    if name == "tflite-int8":
        makers = {"qat": tflite(qat, "qat"), "ptq": tflite(float_compressed, "ptq")}
        if config.weight_granularity != "channel":
            plan = granularity.plan(compressed_tflite, config.weight_granularity)
            makers["ptq"] = lambda work: convert.add_tflite_metadata(
                granularity.quantize_int8(compressed_tflite, calibration, plan,
                                          config.calibration_method),
                {**card, "format": name, "method": "ptq"})
    else:
        makers = {"qat": onnx(lambda: convert.strip_qdq(convert.to_onnx(qat)), "qat"),
                  "ptq": onnx(lambda: convert.to_onnx(float_compressed), "ptq")}
    if qat is None:
        del makers["qat"]
    return makers, plan


def _best_int8(stage: Path, name: str, makers: dict[str, Callable[[Path], bytes]],
               x_val: np.ndarray, y_val: np.ndarray, ref_val: np.ndarray
               ) -> tuple[Path, dict[str, Any]]:
    """Make an int8 artifact every way in ``makers``, run each with its real runtime on the
    validation split (``uint8[V, 28, 28]`` images, ``uint8[V]`` labels; the test set is never
    used to choose), and keep the one that best keeps the float model's predictions: highest
    top-1 agreement with ``ref_val`` (the float model's ``float32[V, 10]`` logits), then
    highest top-1 accuracy. The kept file is renamed into ``stage``.

    Returns:
        The artifact path and its notes (method, validation scores of every method, errors).

    Raises:
        ExportError: every method failed.
    """
    path = stage / FORMATS[name].filename
    scores: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=stage) as tmp:
        for method, make in makers.items():
            work = Path(tmp) / method
            work.mkdir()
            trial = work / path.name
            try:
                trial.write_bytes(make(work))
                predicted = load(trial).logits(x_val).argmax(1)
            except Exception as exc:  # record why and keep the other method
                errors[method] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            scores[method] = {
                "agreement_with_float": float((predicted == ref_val.argmax(1)).mean()),
                "top1_accuracy": float((predicted == y_val).mean())}
        if not scores:
            raise ExportError(f"{name} conversion failed every way: {json.dumps(errors)}")
        method = max(scores, key=lambda m: (scores[m]["agreement_with_float"],
                                            scores[m]["top1_accuracy"]))
        (Path(tmp) / method / path.name).replace(path)
    return path, {"method": method, "validation_by_method": scores, "method_errors": errors}
