"""Export stages 3 and 4, make and choose: one converter per format family, found through
the format table (``Format.family``, ``Format.precision``), and the one rule that keeps the
better of several int8 artifacts.

Float artifacts are exact conversions of the float model. An int8 artifact is made every way
its converter knows (``qat``: from the quantization-aware model; ``ptq``: post-training
quantization of the compressed float model), each is run by its real runtime on the
validation split, and the one that best keeps the float model's predictions is kept
(:func:`choose`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmnist_edge.export import convert, granularity
from fmnist_edge.export.compress import Compressed
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.formats import Format
from fmnist_edge.runtime import load

log = logging.getLogger(__name__)

#: A way to make an artifact: ``work_dir -> file bytes``.
Maker = Callable[[Path], bytes]


class ExportError(RuntimeError):
    """The export could not be made (existing output, every int8 way failed, ...)."""


class TFLiteConverter:
    """TFLite artifacts (the TFLite converter; ai-edge-quantizer for per-layer weight
    granularity, :mod:`export.granularity`)."""

    def float(self, model, fmt: Format) -> bytes:
        """``fp32``, ``fp16`` or ``dynamic`` conversion of a float Keras model."""
        return convert.to_tflite(model, fmt.precision)

    def int8_ways(self, compressed: Compressed, calibration: np.ndarray,
                  config: ExportConfig) -> tuple[dict[str, Maker], dict[str, Any]]:
        """``qat``: the QAT model through the converter (ranges it lacks calibrated on
        ``calibration``); ``ptq``: full-integer post-training quantization of the compressed
        float model (the converter for ``weight_granularity`` ``channel``, else
        ai-edge-quantizer with the per-layer plan). Returns the makers and notes for the
        manifest (the weight-granularity plan of ``ptq``)."""
        makers: dict[str, Maker] = {}
        if compressed.qat is not None:
            makers["qat"] = lambda work: convert.to_tflite(compressed.qat, "int8", calibration,
                                                           config.int8_io)
        notes: dict[str, Any] = {}
        if config.weight_granularity == "channel":
            makers["ptq"] = lambda work: convert.to_tflite(
                compressed.float_model, "int8", calibration, config.int8_io)
        else:
            plan = granularity.plan(compressed.float_tflite, config.weight_granularity)
            notes["weight_granularity"] = plan.to_dict()
            makers["ptq"] = lambda work: granularity.quantize_int8(
                compressed.float_tflite, calibration, plan, config.calibration_method)
        return makers, notes

    def embed(self, blob: bytes, card: dict[str, Any]) -> bytes:
        return convert.add_tflite_metadata(blob, card)

    def io(self, path: Path) -> dict[str, Any]:
        """The input and output quantization the runtime reads (for the card)."""
        rt = load(path, verify=False)
        return {"input_dtype": str(rt.input_dtype), "input_scale": float(rt.input_scale),
                "input_zero_point": int(rt.input_zero_point),
                "output_scale": float(rt.output_scale),
                "output_zero_point": int(rt.output_zero_point)}


class OnnxConverter:
    """ONNX artifacts (tf2onnx; onnxruntime ``quantize_static`` for int8)."""

    def float(self, model, fmt: Format) -> bytes:
        if fmt.precision != "fp32":
            raise ExportError(f"{fmt.name}: the ONNX converter makes fp32 and int8 only")
        return convert.to_onnx(model).SerializeToString()

    def int8_ways(self, compressed: Compressed, calibration: np.ndarray,
                  config: ExportConfig) -> tuple[dict[str, Maker], dict[str, Any]]:
        """``qat``: tf2onnx of the QAT model with its fake-quant nodes stripped (the weights
        QAT trained), ``ptq``: tf2onnx of the compressed float model; each quantized by
        onnxruntime ``quantize_static`` calibrated on ``calibration``."""
        def static(make_float: Callable[[], Any]) -> Maker:
            return lambda work: convert.onnx_int8_static(
                make_float(), calibration, work).SerializeToString()

        makers: dict[str, Maker] = {}
        if compressed.qat is not None:
            makers["qat"] = static(lambda: convert.strip_qdq(convert.to_onnx(compressed.qat)))
        makers["ptq"] = static(lambda: convert.to_onnx(compressed.float_model))
        return makers, {}

    def embed(self, blob: bytes, card: dict[str, Any]) -> bytes:
        import onnx

        proto = onnx.load_from_string(blob)
        return convert.set_onnx_card(proto, card).SerializeToString()

    def io(self, path: Path) -> dict[str, Any]:
        return {}


#: The converter of each format family (``Format.family``).
CONVERTERS: dict[str, TFLiteConverter | OnnxConverter] = {
    "tflite": TFLiteConverter(), "onnx": OnnxConverter()}


def choose(target: Path, makers: dict[str, Maker], x_val: np.ndarray, y_val: np.ndarray,
           ref_val: np.ndarray) -> dict[str, Any]:
    """Make an artifact every way in ``makers``, run each with its real runtime on the
    validation split (``uint8[V, 28, 28]`` images, ``uint8[V]`` labels; the test set is never
    used to choose), and keep the one that best keeps the float model's predictions: highest
    top-1 agreement with ``ref_val`` (the float model's ``float32[V, 10]`` logits), then
    highest top-1 accuracy. The kept file is renamed to ``target``; a way that fails is
    recorded and the others go on.

    Returns:
        Notes: ``method``, ``validation_by_method`` (scores of every way), ``method_errors``.

    Raises:
        ExportError: every way failed.
    """
    scores: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        for method, make in makers.items():
            work = Path(tmp) / method
            work.mkdir()
            trial = work / target.name
            try:
                trial.write_bytes(make(work))
                predicted = load(trial, verify=False).logits(x_val).argmax(1)
            except Exception as exc:  # record why and keep the other ways
                errors[method] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            scores[method] = {
                "agreement_with_float": float((predicted == ref_val.argmax(1)).mean()),
                "top1_accuracy": float((predicted == y_val).mean())}
        if not scores:
            raise ExportError(f"{target.name} conversion failed every way: "
                              f"{json.dumps(errors)}")
        method = max(scores, key=lambda m: (scores[m]["agreement_with_float"],
                                            scores[m]["top1_accuracy"]))
        (Path(tmp) / method / target.name).replace(target)
    return {"method": method, "validation_by_method": scores, "method_errors": errors}


def make_artifacts(stage: Path, formats: list[Format], reference, compressed: Compressed | None,
                   data, config: ExportConfig) -> dict[str, dict[str, Any]]:
    """Write every artifact of ``formats`` into ``stage`` (file names from the format table).

    Args:
        reference: the float Keras model (float formats are its exact conversions).
        compressed: the compress stage's output (``None`` when no format is quantized).
        data: ``export.data.ExportData`` (validation split and representative dataset).

    Returns:
        ``{format: notes}`` for the manifest and the card (int8: method, validation scores,
        weight granularity, quantized I/O).
    """
    from fmnist_edge.train.trainer import predict_logits

    notes: dict[str, dict[str, Any]] = {}
    ref_val = None
    for fmt in formats:
        converter, target = CONVERTERS[fmt.family], stage / fmt.filename
        log.info("converting %s", fmt.name)
        if not fmt.quantized:
            target.write_bytes(converter.float(reference, fmt))
            notes[fmt.name] = {}
            continue
        if ref_val is None:
            ref_val = predict_logits(reference, data.x_val)
        makers, extra = converter.int8_ways(compressed, data.calibration, config)
        chosen = choose(target, makers, data.x_val, data.y_val, ref_val)
        if chosen["method"] != "ptq":
            extra.pop("weight_granularity", None)  # the plan applies to ptq only
        notes[fmt.name] = {**chosen, **extra, **converter.io(target)}
    return notes
