"""The export formats: one table (name, family, precision, suffix, runtime, what it is).

The export finds each format's converter through ``family`` and ``precision``
(``fmnist_edge.export.make.CONVERTERS``); nothing parses the names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    """One artifact format.

    Attributes:
        name: stable identifier used on the CLI (``--formats``) and in manifests.
        family: ``tflite`` or ``onnx``: the converter that makes it.
        precision: ``fp32``, ``fp16`` (float16 weights), ``dynamic`` (int8 weights, float
            activations) or ``int8`` (full-integer); also the file name's stem.
        suffix: file suffix; the runtime is chosen from it.
        runtime: library that runs it on a device.
        quantized: weights and activations are integers (int8), i.e. accuracy may drop and
            parity is judged by accuracy, not by logits.
        float_reference: must reproduce the float Keras model's logits (fp32: atol 1e-4).
        description: one line for tables.
    """

    name: str
    family: str
    precision: str
    suffix: str
    runtime: str
    quantized: bool
    float_reference: bool
    description: str

    @property
    def filename(self) -> str:
        """``model_<precision><suffix>``, e.g. ``model_int8.tflite``."""
        return f"model_{self.precision}{self.suffix}"


_FAMILIES = {"tflite": (".tflite", "litert"), "onnx": (".onnx", "onnxruntime")}


def _format(family: str, precision: str, quantized: bool, float_reference: bool,
            description: str) -> Format:
    suffix, runtime = _FAMILIES[family]
    return Format(f"{family}-{precision}", family, precision, suffix, runtime, quantized,
                  float_reference, description)


FORMATS: dict[str, Format] = {f.name: f for f in (
    _format("tflite", "fp32", False, True, "TFLite float32"),
    _format("tflite", "fp16", False, False, "TFLite float16 weights, float32 compute"),
    _format("tflite", "dynamic", False, False,
            "TFLite dynamic-range: int8 weights, float activations"),
    _format("tflite", "int8", True, False, "TFLite full-integer int8 (pruned + QAT), int8 I/O"),
    _format("onnx", "fp32", False, True, "ONNX float32 (tf2onnx)"),
    _format("onnx", "int8", True, False, "ONNX int8 QDQ (pruned + QAT)"),
)}

#: What ``--int8`` produces: the int8 artifacts and their float references.
INT8_SET = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
FP16_SET = ("tflite-fp16",)


def parse_formats(names: str | list[str]) -> tuple[str, ...]:
    """``"tflite-int8,onnx-fp32"`` or a list -> validated tuple of format names.

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [n.strip() for n in items if n.strip()]
    unknown = [n for n in items if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {sorted(FORMATS)}")
    return tuple(dict.fromkeys(items))
