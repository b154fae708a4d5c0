"""Full-integer TFLite with per-layer weight granularity, quantized by Google's
ai-edge-quantizer (the LiteRT quantizer, github.com/google-ai-edge/ai-edge-quantizer).

Per-channel int8 weights store one float32 scale and one int64 zero point per output channel,
for the weights and again for the int32 bias: 24 bytes per channel. In MobileNetV2 that is
15 % of the all-per-channel int8 model
(benchmarks/results/experiments/tflite_size_mobilenetv2_per_channel.json). Per-tensor weights
store one scale per layer but round every channel with the scale of the widest one, which
ruins layers whose channel ranges differ a lot after BatchNorm folding, above all depthwise
convolutions (Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient
inference: A whitepaper", arXiv:1806.08342, sec. 3.1 and table 2). So the choice is made
layer by layer from the folded float weights: a convolution or fully connected layer whose
per-tensor rounding error is at most :data:`MAX_ERROR_RATIO` times its per-channel error gets
per-tensor weights; depthwise convolutions always keep per-channel weights.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np

#: A layer gets per-tensor weights when its per-tensor rounding error (mean squared) is at
#: most this many times its per-channel error. Chosen on the validation split of the
#: MobileNetV2 run (benchmarks/weight_granularity.py, results/experiments/).
MAX_ERROR_RATIO = 3.0

#: Ops whose weights may go per-tensor; every other weighted op stays per-channel.
PER_TENSOR_OPS = ("CONV_2D", "FULLY_CONNECTED")
#: Convolutions (the first of them may stay float: ``ExportConfig.first_conv``).
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")

GRANULARITIES = ("channel", "auto", "tensor")

#: How activation ranges accumulate over the calibration images: ``minmax``, the smallest
#: min and largest max seen (what the TFLite converter and onnxruntime's ``MinMax``
#: calibrator do), or ``moving_average``, ai-edge-quantizer's default exponential moving
#: average of each image's min and max (smoothing 0.95, ``ai_edge_quantizer.utils.qsv_utils``).
CALIBRATION_METHODS = ("minmax", "moving_average")


@dataclass
class GranularityPlan:
    """Which op (by output tensor name) gets which weight granularity, and why; and the
    first convolution (``first_conv``, ``None`` in a model without one), which
    :func:`quantize_int8` may leave in float."""

    granularity: str = "auto"
    max_error_ratio: float = MAX_ERROR_RATIO
    per_tensor: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)
    error_ratio: dict[str, float] = field(default_factory=dict)
    first_conv: str | None = None

    def to_dict(self) -> dict:
        return {"granularity": self.granularity,
                "per_tensor_layers": len(self.per_tensor),
                "per_channel_layers": len(self.per_channel),
                "max_error_ratio": self.max_error_ratio,
                "error_ratio": {k: round(v, 3) for k, v in self.error_ratio.items()}}


def per_tensor_error_ratio(weights: np.ndarray) -> float:
    """Mean squared rounding error of symmetric int8 per-tensor weights over that of
    per-channel weights, for TFLite weights ``float32[C_out, ...]`` (output channel first).

    Uniform rounding with step s has mean squared error s**2 / 12 (Widrow & Kollár 2008,
    "Quantization Noise", ch. 4); the step is ``max|w| / 127`` for the tensor or per channel,
    so the ratio is ``max_c(r_c)**2 / mean_c(r_c**2)`` with ``r_c = max|w_c|``. It is 1 when
    every channel spans the same range. All-zero channels are left out.
    """
    ranges = np.abs(weights.reshape(weights.shape[0], -1)).max(axis=1).astype(np.float64)
    ranges = ranges[ranges > 0]
    if ranges.size == 0:
        return 1.0
    return float(ranges.max() ** 2 / np.mean(ranges ** 2))


def plan(float_tflite: bytes, granularity: str = "auto",
         max_error_ratio: float = MAX_ERROR_RATIO) -> GranularityPlan:
    """Weight granularity of every CONV_2D / FULLY_CONNECTED op of a float TFLite model.

    ``granularity``: ``channel`` (all per-channel), ``tensor`` (all of these ops per-tensor)
    or ``auto`` (per-tensor where :func:`per_tensor_error_ratio` of the op's folded weights is
    at most ``max_error_ratio``).

    Raises:
        ValueError: unknown ``granularity``.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown weight granularity {granularity!r}; "
                         f"choose from {GRANULARITIES}")
    interpreter = _interpreter(float_tflite)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    result = GranularityPlan(granularity, max_error_ratio)
    for op in interpreter._get_ops_details():  # noqa: SLF001 (the public API has no op list)
        name = names[op["outputs"][0]]
        if result.first_conv is None and op["op_name"] in CONV_OPS:
            result.first_conv = name
        if op["op_name"] not in PER_TENSOR_OPS:
            continue
        ratio = per_tensor_error_ratio(interpreter.get_tensor(op["inputs"][1]))
        result.error_ratio[name] = ratio
        tensorwise = granularity == "tensor" or (granularity == "auto"
                                                 and ratio <= max_error_ratio)
        (result.per_tensor if tensorwise else result.per_channel).append(name)
    return result


def _interpreter(float_tflite: bytes):
    """A LiteRT interpreter of ``float_tflite`` with every op listed, none delegated."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=float_tflite, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    return interpreter


def first_conv_scope(float_tflite: bytes) -> str | None:
    """The op scope (output tensor name) of the first CONV_2D or DEPTHWISE_CONV_2D in
    execution order of a float TFLite model, or ``None`` when it has none (the plan's
    ``first_conv``)."""
    return plan(float_tflite, "channel").first_conv


def quantize_int8(float_tflite: bytes, calibration: np.ndarray,
                  layer_plan: GranularityPlan, calibration_method: str = "minmax", *,
                  float_first_conv: bool = False) -> bytes:
    """Full-integer (int8 weights and activations, int8 I/O) TFLite of ``float_tflite`` with
    ai-edge-quantizer's static min-max recipe: per-channel weights except the ops listed in
    ``layer_plan.per_tensor``; activation ranges calibrated on ``calibration``
    (``uint8[M, 28, 28]`` training images, fed as the model's ``float32[1, 28, 28, 1]``
    pixels 0-255) with ``calibration_method`` (one of :data:`CALIBRATION_METHODS`). With
    ``float_first_conv`` the first convolution (``layer_plan.first_conv``) is left in float
    (ai-edge-quantizer's ``no_quantize`` algorithm: a DEQUANTIZE before it, a QUANTIZE after).

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: unknown ``calibration_method``, or ``float_first_conv`` for a model
            without a convolution.
    """
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, "
                         f"not {calibration_method!r}")
    ops = qtyping.TFLOperationName
    q = quantizer.Quantizer(bytearray(float_tflite))
    q.add_static_config(".*", ops.ALL_SUPPORTED, 8, 8)
    if layer_plan.per_tensor:
        scope = _scope_regex(layer_plan.per_tensor)
        for op in PER_TENSOR_OPS:
            q.add_static_config(scope, getattr(ops, op), 8, 8,
                                qtyping.QuantGranularity.TENSORWISE)
    if float_first_conv:
        if layer_plan.first_conv is None:
            raise ValueError("float_first_conv: the model has no convolution")
        q.update_quantization_recipe(regex=_scope_regex([layer_plan.first_conv]),
                                     operation_name=ops.ALL_SUPPORTED,
                                     algorithm_key="no_quantize")
    (signature, spec), = _signatures(float_tflite).items()
    (input_name,) = spec["inputs"]
    samples = [{input_name: image[None, ..., None].astype(np.float32)} for image in calibration]
    # Quantizer.calibrate always uses the moving average; its Calibrator takes the rule.
    update = {"minmax": qsv_utils.min_max_update,
              "moving_average": qsv_utils.moving_average_update}[calibration_method]
    recipe = recipe_manager.RecipeManager()
    recipe.load_quantization_recipe(q.get_quantization_recipe())
    with warnings.catch_warnings():
        # Calibration reads every intermediate tensor, so ai-edge-quantizer creates its
        # interpreter with experimental_preserve_all_tensors, and LiteRT warns that this is
        # meant for debugging: it is this tool's intent, not the user's concern.
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        calib = calibrator.Calibrator(bytearray(float_tflite), qsv_update_func=update)
        calib.calibrate({signature: samples}, recipe)
    ranges = calib.get_model_qsvs()
    return bytes(q.quantize(ranges, enable_progress_report=False).quantized_model)


def _scope_regex(names: list[str]) -> str:
    """ai-edge-quantizer's regex for exactly these ops: it matches an op's scope, its output
    tensor names each followed by ";"."""
    return "^(" + "|".join(re.escape(n) for n in names) + ");$"


def _signatures(float_tflite: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=float_tflite).get_signature_list()
