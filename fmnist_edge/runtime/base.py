"""The Runtime protocol and ``load()``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fmnist_edge.contract import NUM_CLASSES, ModelCard, softmax


class ModelFileError(ValueError):
    """A model file is missing, corrupt, truncated, or does not honour the contract."""


@runtime_checkable
class Runtime(Protocol):
    """One loaded model. ``logits``: ``uint8[N, 28, 28]`` -> ``float32[N, 10]``."""

    path: Path
    card: ModelCard

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, 28, 28] -> float32[N, 10] logits."""
        ...


def batched(images: np.ndarray, max_batch: int, run: Callable[[np.ndarray], np.ndarray]
            ) -> np.ndarray:
    """Apply ``run`` (``uint8[B, 28, 28]`` -> ``float32[B, 10]``) in chunks of at most
    ``max_batch`` images; returns ``float32[N, 10]`` (``[0, 10]`` for no images)."""
    chunks = [run(images[start:start + max_batch])
              for start in range(0, len(images), max_batch)]
    if not chunks:
        return np.empty((0, NUM_CLASSES), np.float32)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def probabilities(runtime: Runtime, images: np.ndarray) -> np.ndarray:
    """``uint8[N, 28, 28]`` -> ``float32[N, 10]`` class probabilities (softmax of logits)."""
    return softmax(runtime.logits(images))


#: suffix -> (module, class); each backend imports its library lazily.
BACKENDS: dict[str, tuple[str, str]] = {
    ".tflite": ("fmnist_edge.runtime.litert", "LiteRTRuntime"),
    ".onnx": ("fmnist_edge.runtime.onnx", "OnnxRuntime"),
    ".keras": ("fmnist_edge.runtime.keras", "KerasRuntime"),
}


def load(path: str | Path, *, num_threads: int | None = None) -> Runtime:
    """Load a model file with the runtime its suffix calls for.

    Args:
        path: a ``.tflite``, ``.onnx`` or ``.keras`` file.
        num_threads: intra-op threads (``None``: the library default).

    Raises:
        ModelFileError: unknown suffix, missing, corrupt or non-conforming file.
        ImportError: the backend's library is not installed (names the extra to install).
    """
    path = Path(path)
    if path.suffix not in BACKENDS:
        raise ModelFileError(f"{path}: unsupported model format {path.suffix!r}; "
                             f"expected one of {sorted(BACKENDS)}")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    module, cls = BACKENDS[path.suffix]
    return getattr(importlib.import_module(module), cls)(path, num_threads=num_threads)
