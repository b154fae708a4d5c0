"""Model I/O conversion shared by the integer-capable runtimes."""

from __future__ import annotations

import numpy as np


def quantize_input(pixels: np.ndarray, dtype: np.dtype, scale: float, zero_point: int
                   ) -> np.ndarray:
    """``float32`` pixel values 0-255 -> the model's input dtype.

    For integer inputs: ``q = round(x / scale) + zero_point``, clipped to the dtype's range
    (TFLite quantization spec, ai.google.dev/edge/litert/models/quantization_spec). With the
    usual int8 input (scale 1.0, zero point -128) uint8 pixels map exactly.
    """
    if not np.issubdtype(dtype, np.integer):
        return pixels.astype(dtype, copy=False)
    if scale == 0:
        raise ValueError("integer model input without quantization parameters")
    info = np.iinfo(dtype)
    q = np.round(pixels / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def quantize_pixels(images: np.ndarray, dtype: np.dtype, scale: float, zero_point: int
                    ) -> np.ndarray:
    """``uint8[N, 28, 28]`` pixels -> model input ``[N, 28, 28, 1]`` of ``dtype``.

    Exact integer fast paths for the usual full-integer inputs (scale 1.0): uint8 with zero
    point 0 passes through, int8 with zero point -128 is ``x - 128`` computed as
    ``x XOR 0x80`` reinterpreted as int8 (two's complement); everything else goes through
    :func:`quantize_input`.
    """
    x = images[..., None]
    if scale == 1.0 and dtype == np.uint8 and zero_point == 0:
        return x
    if scale == 1.0 and dtype == np.int8 and zero_point == -128:
        return (x ^ np.uint8(0x80)).view(np.int8)
    return quantize_input(x.astype(np.float32), dtype, scale, zero_point)


def dequantize_output(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer model output -> ``float32`` (``(q - zero_point) * scale``); floats pass."""
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32, copy=False)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
