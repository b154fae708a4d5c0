"""Latency and throughput measurement of a Runtime (warm-up, then ``time.perf_counter``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from fmnist_edge.runtime.base import Runtime


@dataclass(frozen=True)
class Latency:
    """Wall-clock latency of ``Runtime.logits`` on one batch.

    Attributes:
        batch_size: images per call.
        runs: timed calls.
        p50_ms, p90_ms, p99_ms, mean_ms: percentiles and mean per call, milliseconds.
        throughput_ips: images per second over the timed calls' total elapsed time.
    """

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(runtime: Runtime, images: np.ndarray, *, batch_size: int = 1,
                    warmup: int = 10, runs: int = 200, duration_s: float | None = None
                    ) -> Latency:
    """Time ``runtime.logits`` on batches cycled from ``images``.

    Args:
        runtime: a loaded model.
        images: ``uint8[M, 28, 28]`` pool of inputs (M >= 1).
        batch_size: images per call.
        warmup: untimed calls first (allocation, caches, lazy init).
        runs: timed calls (a lower bound when ``duration_s`` is given).
        duration_s: keep timing until this many seconds have passed (and ``runs`` are done).

    Returns:
        :class:`Latency` (ms and img/s).
    """
    if len(images) == 0:
        raise ValueError("measure_latency needs at least one image")
    reps = int(np.ceil(batch_size / len(images)))
    pool = np.concatenate([images] * reps) if reps > 1 else images
    batches = [pool[(i * batch_size) % (len(pool) - batch_size + 1):][:batch_size]
               for i in range(8)]
    for i in range(warmup):
        runtime.logits(batches[i % len(batches)])
    times = []
    start = time.perf_counter()
    while len(times) < runs or (duration_s and time.perf_counter() - start < duration_s):
        batch = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        runtime.logits(batch)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    p50 = float(np.percentile(ms, 50))
    return Latency(batch_size, len(ms), p50, float(np.percentile(ms, 90)),
                   float(np.percentile(ms, 99)), float(ms.mean()),
                   batch_size * len(ms) / (float(ms.sum()) / 1e3))
