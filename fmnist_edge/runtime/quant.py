"""Model I/O conversion shared by the integer-capable runtimes."""

from __future__ import annotations

from collections.abc import Callable

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
    return output_dequantizer(values.dtype, scale, zero_point)(values)


def input_quantizer(dtype: np.dtype, scale: float, zero_point: int
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`quantize_pixels` for one model input, its branch chosen once (at load time):
    ``uint8[N, 28, 28]`` -> ``[N, 28, 28, 1]`` of ``dtype``. At batch 1 the per-call dtype
    tests cost as much as a small model's inference (benchmarks/results/peers_*.json)."""
    dtype = np.dtype(dtype)
    if scale == 1.0 and dtype == np.uint8 and zero_point == 0:
        return lambda images: images[..., None]
    if scale == 1.0 and dtype == np.int8 and zero_point == -128:
        flip = np.uint8(0x80)
        return lambda images: np.bitwise_xor(images[..., None], flip).view(np.int8)
    if dtype == np.float32:
        return lambda images: images[..., None].astype(np.float32)
    return lambda images: quantize_pixels(images, dtype, scale, zero_point)


def output_dequantizer(dtype: np.dtype, scale: float, zero_point: int
                       ) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`dequantize_output` for one model output, its branch chosen once: integer
    ``[N, 10]`` -> ``float32[N, 10]`` (``(q - zero_point) * scale``); float32 passes.

    8-bit outputs go through a 256-entry ``float32`` table of that same expression, one
    gather instead of three array operations (bit-identical: each entry is computed by the
    same float32 operations)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        return lambda values: values.astype(np.float32, copy=False)
    zp, sc = np.float32(zero_point), np.float32(scale)
    if dtype.itemsize == 1:
        codes = np.arange(256, dtype=np.uint8).view(dtype)  # table index = the byte's bits
        table = (codes.astype(np.float32) - zp) * sc
        return lambda values: table.take(values.view(np.uint8))

    def dequantize(values: np.ndarray) -> np.ndarray:
        out = values.astype(np.float32)
        out -= zp
        out *= sc
        return out
    return dequantize
