"""The Runtime protocol and ``load()``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fmnist_edge.contract import IMAGE_SIZE, NUM_CLASSES, ModelCard


class ModelFileError(ValueError):
    """A model file is missing, corrupt, truncated, or does not honour the contract."""


def check_io(source: str | Path, input_shape, output_shape) -> None:
    """The one contract check of every format: a model maps ``[N, 28, 28, 1]`` pixels to
    ``[N, 10]`` logits (N: any batch, or a fixed one).

    Args:
        source: the model file, named in the error.
        input_shape: the input's shape as the format reports it (batch first).
        output_shape: the output's shape (batch first).

    Raises:
        ModelFileError: another shape.
    """
    if (list(input_shape[1:]) != [IMAGE_SIZE, IMAGE_SIZE, 1]
            or list(output_shape[1:]) != [NUM_CLASSES]):
        raise ModelFileError(f"{source}: model maps {list(input_shape)} -> "
                             f"{list(output_shape)}, not the contract [N, {IMAGE_SIZE}, "
                             f"{IMAGE_SIZE}, 1] -> [N, {NUM_CLASSES}]")


@runtime_checkable
class Runtime(Protocol):
    """One loaded model. ``logits``: ``uint8[N, 28, 28]`` -> ``float32[N, 10]``."""

    path: Path
    card: ModelCard

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, 28, 28] -> float32[N, 10] logits."""
        ...


def batched(images: np.ndarray, max_batch: int, run: Callable[[np.ndarray], np.ndarray],
            *, source: str = "model", check_finite: bool = True) -> np.ndarray:
    """Apply ``run`` (``uint8[B, 28, 28]`` -> ``float32[B, 10]``) in chunks of at most
    ``max_batch`` images; returns ``float32[N, 10]`` (``[0, 10]`` for no images).

    ``check_finite=False`` skips the NaN/infinity check, for runtimes whose logits are
    finite by construction (integer outputs times a finite scale); at batch 1 the check
    costs a fifth of a small model's call (benchmarks/results/peers_*.json, mlp).

    Raises:
        ModelFileError: the model produced NaN or infinite logits (names ``source``).
    """
    if 0 < len(images) <= max_batch:  # one chunk: no list, no concatenation (batch 1)
        out = run(images)
    else:
        chunks = [run(images[start:start + max_batch])
                  for start in range(0, len(images), max_batch)]
        if not chunks:
            return np.empty((0, NUM_CLASSES), np.float32)
        out = np.concatenate(chunks)
    # One reduction decides the common case: the sum of finite float32 logits is finite
    # (a sum that overflows means logits near 1e38, a broken model too).
    if check_finite and not np.isfinite(out.sum()):
        bad = int((~np.isfinite(out)).any(axis=1).sum()) or len(out)
        raise ModelFileError(f"{source}: produced NaN or infinite logits for {bad} of "
                             f"{len(out)} images; the model is broken (re-export it)")
    return out


#: suffix -> (module, class); each backend imports its library lazily.
def usable_cores() -> int:
    """The cores this process may run on (``taskset``, cgroup CPU sets), not the machine's
    count: threads beyond them only take turns on the same cores."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows: no affinity API
        return os.cpu_count() or 1


BACKENDS: dict[str, tuple[str, str]] = {
    ".tflite": ("fmnist_edge.runtime.litert", "LiteRTRuntime"),
    ".onnx": ("fmnist_edge.runtime.onnx", "OnnxRuntime"),
    ".keras": ("fmnist_edge.runtime.keras", "KerasRuntime"),
}


def verify_sha256(runtime: Runtime) -> None:
    """Check the file against the sha256 its JSON sidecar card records (cards embedded in
    the model cannot record their own file's hash and are not checked).

    Raises:
        ModelFileError: the digests differ (the file was corrupted or changed).
    """
    from fmnist_edge.runtime.card import file_sha256, sidecar_path

    expected = runtime.card.sha256
    if not expected or not sidecar_path(runtime.path).is_file():
        return
    digest = file_sha256(runtime.path)
    if digest != expected:
        raise ModelFileError(f"{runtime.path}: sha256 {digest[:16]}... differs from "
                             f"the {expected[:16]}... its card {sidecar_path(runtime.path).name} "
                             "records: the file is corrupt or was changed; export or copy it "
                             "again (or pass --no-verify to run it anyway)")


def load(path: str | Path, *, num_threads: int | None = None, verify: bool = True) -> Runtime:
    """Load a model file with the runtime its suffix calls for.

    Args:
        path: a ``.tflite``, ``.onnx`` or ``.keras`` file.
        num_threads: intra-op threads (``None``: the library default).
        verify: check the file's sha256 against its sidecar card (:func:`verify_sha256`).

    A model is run once on two blank images before it is returned, so a file that loads but
    cannot run (a fixed batch size it cannot serve, an op that fails at invoke, NaN
    outputs) is refused here, naming the file, not in the middle of a command.

    Raises:
        ModelFileError: unknown suffix, missing, corrupt, non-conforming or not runnable.
        ValueError: ``num_threads`` outside 1..CPU count.
        ImportError: the backend's library is not installed (names the extra to install).
    """
    path = Path(path)
    cpus = os.cpu_count() or 1
    if num_threads is not None and not 1 <= num_threads <= cpus:
        raise ValueError(f"--threads must be in 1..{cpus} (this machine's CPU count), got "
                         f"{num_threads}")
    if path.suffix not in BACKENDS:
        raise ModelFileError(f"{path}: unsupported model format {path.suffix!r}; "
                             f"expected one of {sorted(BACKENDS)}")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    module, cls = BACKENDS[path.suffix]
    runtime = getattr(importlib.import_module(module), cls)(path, num_threads=num_threads)
    if verify:
        verify_sha256(runtime)
    try:
        out = runtime.logits(np.zeros((2, 28, 28), np.uint8))
    except ModelFileError:
        raise
    except Exception as exc:  # the libraries raise their own types at run time
        raise ModelFileError(f"{path}: loads but fails to run ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); export it "
                             "again with fmnist-edge export") from exc
    if out.shape != (2, NUM_CLASSES):
        raise ModelFileError(f"{path}: returned shape {out.shape} for 2 images, not (2, 10)")
    return runtime
