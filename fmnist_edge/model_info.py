"""What ``fmnist-edge info`` shows about a model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist_edge.runtime import ModelFileError, load
from fmnist_edge.runtime.base import verify_sha256
from fmnist_edge.runtime.card import sidecar_path


def model_info(path: Path, runtime=None) -> dict[str, Any]:
    """The card of ``path`` and what its runtime reads from the file (``runtime``: the model
    already loaded, else it is loaded here).

    Returns:
        JSON-ready dict: ``file``, ``size_bytes``, ``name``, ``format``, ``labels``,
        ``input`` (dtype, and scale / zero point for integer inputs), ``output``, ``card``
        (``sidecar`` or ``embedded or none``), ``source_run``, ``test_accuracy`` (fraction
        0-1 or ``None``), ``sha256`` and ``sha256_check`` (``verified``, ``not recorded``).

    Raises:
        ModelFileError: unreadable, non-conforming, or its sha256 differs from its card.
    """
    runtime = runtime if runtime is not None else load(path, verify=False)
    card = runtime.card
    sidecar = sidecar_path(path).is_file()
    if card.sha256 and sidecar:
        verify_sha256(runtime)
        check = "verified against the sidecar card"
    elif card.sha256:
        check = "recorded, not checkable (embedded card)"
    else:
        check = "not recorded"
    dtype = getattr(runtime, "input_dtype", None)
    io_in = f"{dtype or 'float32'}[N, 28, 28, 1]"
    if dtype is not None and str(dtype) != "float32":
        scale = getattr(runtime, "input_scale", 1.0)
        zero = getattr(runtime, "input_zero_point", None)
        io_in += f", scale {scale:g}" + (f", zero point {zero}" if zero is not None else "")
    out_scale = getattr(runtime, "output_scale", 0.0)
    io_out = "float32[N, 10] logits"
    if out_scale:
        io_out = (f"int8[N, 10] logits, scale {out_scale:g}, zero point "
                  f"{getattr(runtime, 'output_zero_point', 0)} (dequantized by the runtime)")
    if not isinstance(card.labels, tuple) or len(card.labels) != 10:
        raise ModelFileError(f"{path}: its card lists {len(card.labels)} labels, not 10")
    return {
        "file": str(path), "size_bytes": path.stat().st_size, "name": card.name,
        "format": card.format, "labels": list(card.labels), "input": io_in, "output": io_out,
        "card": "sidecar" if sidecar else "embedded or none", "source_run": card.source_run,
        "test_accuracy": card.test_accuracy, "sha256": card.sha256, "sha256_check": check,
    }
