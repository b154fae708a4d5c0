"""Which installed runtime runs the shipped model faster on this machine: measured once,
then remembered.

Neither runtime is faster everywhere. On a Xeon with AMX and AVX-512 VNNI the int8 TFLite
under LiteRT took 137 us a call against 192 us for the int8 ONNX under onnxruntime
(benchmarks/results/peers_xeon_amx.json); on an AVX2 EPYC without VNNI, LiteRT's int8 kernels
are no faster than its fp32 ones and onnxruntime took 593 us against LiteRT's 914 us
(benchmarks/results/peers_epyc_avx2.json); on an EPYC with AVX-512 VNNI LiteRT wins again,
165 against 242 us (benchmarks/results/peers_epyc_vnni.json). So when both runtimes are
installed, the first :func:`fastest` call times both shipped files in the process (batch
``BATCH``, ``ROUNDS`` interleaved rounds of ``CALLS`` calls, with the inference threads
``predict`` runs them with; about 0.2 s) and writes the choice to the user cache, keyed by
the CPU and its int8 instructions (``provenance.int8_isa``), the threads, the runtimes'
versions and the files' sha256: any change measures again.
An unwritable cache only means measuring again next time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from fmnist_edge import atomic
from fmnist_edge.provenance import machine, package_versions

#: Images per timed call, calls per round and rounds.
BATCH, CALLS, ROUNDS = 8, 4, 3
#: The distributions whose versions key the cached choice.
RUNTIMES = ("ai-edge-litert", "tflite-runtime", "onnxruntime")


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/fmnist-edge/runtime_choice.json`` (``~/.cache`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "fmnist-edge" / "runtime_choice.json"


def measure(paths: list[Path], *, batch: int = BATCH, calls: int = CALLS,
            rounds: int = ROUNDS, threads: int | None = None) -> dict[str, float]:
    """Median milliseconds per call of ``batch`` seeded random images (latency does not
    depend on content) for each model file, the files taking turns each round, each loaded
    with ``threads`` inference threads (``None``: the library's default).

    Returns:
        ``{file name: ms}``.

    Raises:
        ImportError, ModelFileError: as :func:`fmnist_edge.runtime.load`.
    """
    from fmnist_edge.runtime import load

    images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    runtimes = {path.name: load(path, num_threads=threads, verify=False) for path in paths}
    for runtime in runtimes.values():
        runtime.logits(images)  # warm-up: allocation, first-call setup
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            for _ in range(calls):
                start = time.perf_counter()
                runtime.logits(images)
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t) * 1e3) for name, t in times.items()}


def _key(paths: list[Path], threads: int | None) -> dict:
    from fmnist_edge.runtime.card import file_sha256

    described = machine()
    # The model name alone does not tell CPUs apart: "AMD EPYC" is both an AVX2 part where
    # onnxruntime wins and an AVX-512 VNNI part; the int8 instructions decide the kernels.
    return {"cpu": described["cpu"], "int8_isa": described.get("int8_isa"),
            "cores": described["cores"], "threads": threads,
            "versions": package_versions(RUNTIMES),
            "models": {path.name: file_sha256(path) for path in paths}}


def fastest(paths: list[Path], *, threads: int | None = None) -> Path:
    """The file of ``paths`` (one per runtime) that runs fastest here with ``threads``
    inference threads: from the cache when it was measured on this CPU with these threads,
    runtime versions and files, else measured now (:func:`measure`) and cached.

    Raises:
        ImportError, ModelFileError: a runtime or file that cannot be loaded.
    """
    key = _key(paths, threads)
    by_name = {path.name: path for path in paths}
    cache = cache_path()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key and cached.get("choice") in by_name:
            return by_name[cached["choice"]]
    except (OSError, ValueError, AttributeError):
        pass  # no cache yet, or unreadable: measure
    timings = measure(paths, threads=threads)
    choice = min(timings, key=timings.get)
    try:
        atomic.write_json(cache, {"key": key, "choice": choice, "ms_per_call": timings,
                                  "batch": BATCH, "threads": threads})
    except OSError:
        pass
    return by_name[choice]
