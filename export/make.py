"""Export stages 3 and 4, make and choose: one converter per format family, found through
the format table (``Format.family``, ``Format.precision``), and the one rule that keeps the
better of several int8 artifacts.

Float artifacts are exact conversions of the float model. An int8 artifact is made every way
its converter knows (``qat``: from the quantization-aware model; ``ptq``: post-training
quantization of the compressed float model), each is run by its real runtime on the
validation split, and the one that best keeps the float model's predictions is kept, or a
nearly as faithful one that is clearly faster at batch 1 on this machine (:func:`choose`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
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
        ai-edge-quantizer with the per-layer plan); ``ptq/float-first``: the same by
        ai-edge-quantizer with the first convolution left in float (``config.first_conv``;
        int8 I/O only, as ai-edge-quantizer makes). Returns the makers and notes for the
        manifest (the weight-granularity plan of the ``ptq`` ways)."""
        makers: dict[str, Maker] = {}
        notes: dict[str, Any] = {}
        plan = (granularity.plan(compressed.float_tflite, config.weight_granularity)
                if config.weight_granularity != "channel" or "float" in config.first_conv
                else None)
        float_first = ("float" in config.first_conv and config.int8_io == "int8"
                       and plan.first_conv is not None)
        if config.weight_granularity != "channel" or float_first:  # a ptq way uses the plan
            notes["weight_granularity"] = plan.to_dict()
        if "int8" in config.first_conv or not float_first:
            if compressed.qat is not None:
                makers["qat"] = lambda work: convert.to_tflite(
                    compressed.qat, "int8", calibration, config.int8_io)
            if config.weight_granularity == "channel":
                makers["ptq"] = lambda work: convert.to_tflite(
                    compressed.float_model, "int8", calibration, config.int8_io)
            else:
                makers["ptq"] = lambda work: granularity.quantize_int8(
                    compressed.float_tflite, calibration, plan, config.calibration_method)
        if float_first:
            makers["ptq/float-first"] = lambda work: granularity.quantize_int8(
                compressed.float_tflite, calibration, plan, config.calibration_method,
                float_first_conv=True)
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
        onnxruntime ``quantize_static`` calibrated on ``calibration``, once per activation
        type of ``config.onnx_activations`` (ways named ``qat/uint8``, ``ptq/int8``, ...);
        with ``float`` in ``config.first_conv``, ``ptq`` again with the first convolution
        left in float (``ptq/uint8/float-first``, ...)."""
        def static(make_float: Callable[[], Any], activations: str,
                   float_first_conv: bool = False) -> Maker:
            return lambda work: convert.onnx_int8_static(
                make_float(), calibration, work, activation_type=activations,
                float_first_conv=float_first_conv).SerializeToString()

        # Each float graph is converted once, however many activation types quantize it.
        sources: dict[str, Callable[[], Any]] = {}
        if compressed.qat is not None:
            sources["qat"] = functools.cache(
                lambda: convert.strip_qdq(convert.to_onnx(compressed.qat)))
        sources["ptq"] = functools.cache(lambda: convert.to_onnx(compressed.float_model))
        float_first = ("float" in config.first_conv
                       and convert.first_conv_node(sources["ptq"]()) is not None)
        makers = {}
        if "int8" in config.first_conv or not float_first:
            makers = {f"{method}/{activations}": static(make_float, activations)
                      for method, make_float in sources.items()
                      for activations in config.onnx_activations}
        if float_first:
            makers.update({f"ptq/{activations}/float-first":
                           static(sources["ptq"], activations, float_first_conv=True)
                           for activations in config.onnx_activations})
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


#: Key of the fp32 artifact among the files :func:`choose` times (not a way).
FLOAT_KEY = "float32 artifact"

#: Batch-1 calls per way and rounds (interleaved across the ways) that time the int8 ways.
CHOOSE_CALLS, CHOOSE_ROUNDS = 200, 5


def time_ways(paths: dict[str, Path], images: np.ndarray) -> dict[str, float]:
    """p50 batch-1 latency in microseconds of each model file, one thread, in
    :data:`CHOOSE_ROUNDS` interleaved rounds (so a busy moment slows every way alike) of
    ``CHOOSE_CALLS / CHOOSE_ROUNDS`` calls over ``uint8[K, 28, 28]`` ``images``
    (:func:`fmnist_edge.benchmark.interleaved_times`)."""
    from fmnist_edge.benchmark import interleaved_times

    runtimes = [load(path, verify=False, num_threads=1) for path in paths.values()]
    for rt in runtimes:  # warm-up
        rt.logits(images[:1])
    per_round = [max(1, CHOOSE_CALLS // CHOOSE_ROUNDS)] * CHOOSE_ROUNDS
    times = interleaved_times(runtimes, [image[None] for image in images], per_round)
    return {name: float(np.median([t for rnd in times for t in rnd[i]])) * 1e6
            for i, name in enumerate(paths)}


def pick(scores: dict[str, dict[str, float]], agreement_slack: float,
         min_speedup: float, float_p50_us: float | None = None) -> str:
    """The rule of :func:`choose`: the most faithful way (highest validation agreement with
    the float model, then highest top-1), unless a way whose agreement is at most
    ``agreement_slack`` below it is at least ``min_speedup`` times faster (``p50_us``); then
    the fastest such way.

    With ``float_p50_us`` (the fp32 artifact of the same runtime, timed beside the ways), the
    rule runs among the ways faster than it when there are any: an int8 model slower than
    its float one has no reason to exist (issue #18), and the parity gate still judges the
    way kept."""
    if float_p50_us is not None:
        faster = {m: s for m, s in scores.items() if s.get("p50_us", math.inf) < float_p50_us}
        scores = faster or scores
    faithful = max(scores, key=lambda m: (scores[m]["agreement_with_float"],
                                          scores[m]["top1_accuracy"]))
    best = scores[faithful]["agreement_with_float"]
    near = [m for m in scores
            if scores[m]["agreement_with_float"] >= best - agreement_slack - 1e-12
            and "p50_us" in scores[m]]
    if "p50_us" not in scores[faithful] or not near:
        return faithful
    fastest = min(near, key=lambda m: scores[m]["p50_us"])
    if scores[fastest]["p50_us"] * min_speedup <= scores[faithful]["p50_us"]:
        return fastest
    return faithful


def choose(target: Path, makers: dict[str, Maker], x_val: np.ndarray, y_val: np.ndarray,
           ref_val: np.ndarray, *, agreement_slack: float = 0.0,
           min_speedup: float = 1.05, float_model: Path | None = None) -> dict[str, Any]:
    """Make an artifact every way in ``makers``, run each with its real runtime on the
    validation split (``uint8[V, 28, 28]`` images, ``uint8[V]`` labels; the test set is never
    used to choose), and keep the one that best keeps the float model's predictions: highest
    top-1 agreement with ``ref_val`` (the float model's ``float32[V, 10]`` logits), then
    highest top-1 accuracy; with ``agreement_slack`` > 0 and several ways, each is also
    timed at batch 1 on this machine (:func:`time_ways`) and a nearly as faithful way that is
    ``min_speedup`` times faster wins (:func:`pick`); ``float_model`` (the fp32 artifact of
    the same runtime, if made) is timed with them, and ways slower than it are passed over
    when another is faster. The kept file is renamed to ``target``; a way that fails is
    recorded and the others go on.

    Returns:
        Notes: ``method``, ``validation_by_method`` (scores of every way: agreement, top-1,
        ``p50_us`` when timed), ``method_errors``, and ``float_p50_us`` when the float
        artifact was timed.

    Raises:
        ExportError: every way failed.
    """
    scores: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        trials: dict[str, Path] = {}
        for method, make in makers.items():
            work = Path(tmp) / method.replace("/", "-")
            work.mkdir()
            trial = work / target.name
            try:
                trial.write_bytes(make(work))
                predicted = load(trial, verify=False).logits(x_val).argmax(1)
            except Exception as exc:  # record why and keep the other ways
                errors[method] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            trials[method] = trial
            scores[method] = {
                "agreement_with_float": float((predicted == ref_val.argmax(1)).mean()),
                "top1_accuracy": float((predicted == y_val).mean())}
        if not scores:
            raise ExportError(f"{target.name} conversion failed every way: "
                              f"{json.dumps(errors)}")
        float_p50 = None
        if agreement_slack > 0 and len(trials) > 1:
            timed = {**trials, FLOAT_KEY: float_model} if float_model else dict(trials)
            p50s = time_ways(timed, x_val[:64])
            float_p50 = p50s.pop(FLOAT_KEY, None)
            for method, p50 in p50s.items():
                scores[method]["p50_us"] = p50
        method = pick(scores, agreement_slack, min_speedup, float_p50)
        trials[method].replace(target)
    notes = {"method": method, "validation_by_method": scores, "method_errors": errors}
    if float_p50 is not None:
        notes["float_p50_us"] = float_p50
    return notes


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
    float_files: dict[str, Path] = {}  # family -> its fp32 artifact, timed beside the int8 ways
    for fmt in sorted(formats, key=lambda f: f.quantized):  # float files first
        converter, target = CONVERTERS[fmt.family], stage / fmt.filename
        log.info("converting %s", fmt.name)
        if not fmt.quantized:
            target.write_bytes(converter.float(reference, fmt))
            notes[fmt.name] = {}
            if fmt.precision == "fp32":
                float_files[fmt.family] = target
            continue
        if ref_val is None:
            ref_val = predict_logits(reference, data.x_val)
        makers, extra = converter.int8_ways(compressed, data.calibration, config)
        chosen = choose(target, makers, data.x_val, data.y_val, ref_val,
                        agreement_slack=config.agreement_slack,
                        min_speedup=config.min_speedup,
                        float_model=float_files.get(fmt.family))
        if not chosen["method"].startswith("ptq"):
            extra.pop("weight_granularity", None)  # the plan applies to the ptq ways only
        notes[fmt.name] = {**chosen, **extra, **converter.io(target)}
    return notes
