"""``fmnist-edge benchmark``: latency, throughput, size, load time and memory of models,
side by side, with the machine and library versions recorded."""

from __future__ import annotations

import csv
import io
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fmnist_edge.provenance import machine as provenance_machine
from fmnist_edge.provenance import package_versions, provenance
from fmnist_edge.runtime import load
from fmnist_edge.runtime.base import ModelFileError, Runtime


@dataclass(frozen=True)
class BenchmarkRow:
    """One (model, batch size, threads) measurement. Units are in the names."""

    model: str
    batch_size: int
    threads: int
    size_bytes: int
    load_time_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_ips: float
    runs: int
    rss_mb: float
    peak_rss_mb: float
    rss_delta_mb: float
    first_load_time_ms: float
    p50_ratio_to_first: float = 1.0
    p50_ratio_paired: float = 1.0
    size_ratio_to_first: float = 1.0


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


def _batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Eight ``uint8[batch_size, 28, 28]`` batches cycled from ``images`` (repeated when
    there are fewer images than ``batch_size``)."""
    reps = int(np.ceil(batch_size / len(images)))
    pool = np.concatenate([images] * reps) if reps > 1 else images
    return [pool[(i * batch_size) % (len(pool) - batch_size + 1):][:batch_size]
            for i in range(8)]


def _time_calls(call: Callable[[object], object], inputs: Sequence[object], runs: int,
                duration_s: float | None = None) -> list[float]:
    """Seconds of each of at least ``runs`` timed ``call(x)`` (and at least ``duration_s``
    seconds of them), ``x`` cycling through ``inputs`` (picked outside the timed region)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or (duration_s and time.perf_counter() - start < duration_s):
        x = inputs[len(times) % len(inputs)]
        t0 = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - t0)
    return times


def interleaved_call_times(calls: Sequence[tuple[Callable[[object], object], Sequence[object]]],
                           per_round: Sequence[int], round_s: float | None = None
                           ) -> list[list[list[float]]]:
    """Time several callables taking turns: in round ``r`` each ``(call, inputs)`` makes
    ``per_round[r]`` timed calls ``call(x)`` (and at least ``round_s`` seconds of them),
    ``x`` cycling through its ``inputs`` from the first, so that a slow minute of the
    machine hits all of them alike. ``benchmarks/peers.py`` and ``conv_cost.py`` time raw
    library calls with it; :func:`interleaved_times` times loaded models.

    Returns:
        Seconds of each call, ``times[round][callable][call]``.
    """
    return [[_time_calls(call, inputs, n, round_s) for call, inputs in calls]
            for n in per_round]


def interleaved_times(runtimes: list[Runtime], batches: list[np.ndarray],
                      per_round: list[int], round_s: float | None = None
                      ) -> list[list[list[float]]]:
    """Time several loaded models taking turns: in round ``r`` each model makes
    ``per_round[r]`` timed ``logits`` calls (and at least ``round_s`` seconds of them) on
    ``batches`` (``uint8[B, 28, 28]`` each) in turn, so that a slow minute of the machine
    hits all of them alike.

    Returns:
        Seconds of each call, ``times[round][model][call]``.
    """
    return interleaved_call_times([(rt.logits, batches) for rt in runtimes], per_round,
                                  round_s)


def _latency(batch_size: int, times_s: list[float]) -> Latency:
    """:class:`Latency` of timed calls (seconds each)."""
    ms = np.array(times_s) * 1e3
    return Latency(batch_size, len(ms), float(np.percentile(ms, 50)),
                   float(np.percentile(ms, 90)), float(np.percentile(ms, 99)),
                   float(ms.mean()), batch_size * len(ms) / (float(ms.sum()) / 1e3))


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

    Raises:
        ValueError: no images.
    """
    if len(images) == 0:
        raise ValueError("measure_latency needs at least one image")
    batches = _batches(images, batch_size)
    for i in range(warmup):
        runtime.logits(batches[i % len(batches)])
    return _latency(batch_size, _time_calls(runtime.logits, batches, runs, duration_s))


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``nan`` where unavailable)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10


def machine() -> dict:
    """:func:`fmnist_edge.provenance.machine` and the versions of the inference libraries."""
    versions = package_versions(("fmnist-edge", "onnxruntime", "ai-edge-litert",
                                 "tflite-runtime", "numpy", "Pillow", "opencv-python-headless",
                                 "openvino"))
    return {**provenance_machine(), "versions": versions}


def input_images(data_dir: str | Path | None = None, count: int = 512
                 ) -> tuple[np.ndarray, str]:
    """Real test images when Fashion-MNIST is on disk (no download), else seeded random
    pixels (latency does not depend on content). Returns ``(uint8[count, 28, 28], source)``;
    ``source`` says why random pixels were used.

    Raises:
        fmnist_edge.data.DataError: the data was found (or named with ``--data-dir``) but is
            corrupt or incomplete: that is never silently replaced by random pixels.
    """
    from fmnist_edge import data

    try:
        data.locate(data_dir, download=False, splits=("test",))
    except data.DataError as exc:
        if data_dir is not None:
            raise
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                f"random pixels (Fashion-MNIST not found: {exc})")
    images, _ = data.load_split("test", data_dir, download=False)
    return images[:count], "fashion-mnist test images"


#: Rounds in which the models of one ``benchmark`` setting take turns (``--rounds``).
DEFAULT_ROUNDS = 5


@dataclass
class _Loaded:
    path: Path
    runtime: Runtime
    load_ms: float
    first_load_ms: float
    rss_delta_mb: float


def _load_timed(model: Path, n_threads: int, batch: np.ndarray) -> _Loaded:
    """Load ``model`` twice (the first load also imports its runtime's library, once per
    process; the second is what loading this model costs) and run it once on ``batch`` (the
    largest of the run); the RSS delta is what the model added to the process."""
    before = _rss_mb()
    t0 = time.perf_counter()
    warm = load(model, num_threads=n_threads)
    first_ms = (time.perf_counter() - t0) * 1e3
    del warm
    t0 = time.perf_counter()
    runtime = load(model, num_threads=n_threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    runtime.logits(batch)  # the first call allocates the arena / session buffers
    return _Loaded(model, runtime, load_ms, first_ms, _rss_mb() - before)


def benchmark(models: list[str | Path], *, batch_sizes=(1,), threads=(1,), runs: int = 200,
              duration_s: float | None = None, warmup: int = 20,
              rounds: int | None = None, data_dir: str | Path | None = None) -> dict:
    """Benchmark every model at every (batch size, thread count), side by side: for each
    setting the models take turns in ``rounds`` rounds (at most ``runs``) that share each
    model's ``runs`` calls, so that a slow minute of the machine hits all of them alike.

    Args:
        models: model files (.tflite, .onnx, .keras).
        batch_sizes: images per call.
        threads: intra-op thread counts.
        runs: timed calls per model and setting (minimum when ``duration_s`` is given).
        duration_s: time each model and setting for at least this many seconds.
        warmup: untimed calls first.
        rounds: interleaved rounds (1: each model timed in one block, one after another;
            ``None``: :data:`DEFAULT_ROUNDS`).
        data_dir: where to find test images (no download).

    Returns:
        ``{"machine", "inputs", "settings", "rows": [BenchmarkRow as dict]}``, rows in model,
        threads, batch-size order. Ratios compare each row with the first model's row at the
        same batch size and threads: ``p50_ratio_to_first`` of the p50s over all calls,
        ``p50_ratio_paired`` the median over rounds of the ratio within each round (steadier
        when the machine's speed changes). ``load_time_ms`` is a second load (the library
        already imported; the first, with the import, is ``first_load_time_ms``);
        ``throughput_ips`` is images over the timed calls' elapsed time; ``rss_delta_mb`` is
        the resident memory the model added when loaded and first run on the largest batch
        (allocators keep freed memory, so it is approximate), while ``peak_rss_mb`` is the
        process peak so far, which includes every model of the run: they are all loaded
        while they take turns.

    Raises:
        fmnist_edge.runtime.ModelFileError: an unreadable model (named).
        ValueError: ``rounds`` < 1.
    """
    rounds = DEFAULT_ROUNDS if rounds is None else rounds
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    images, source = input_images(data_dir)
    paths = list(map(Path, models))
    rounds = min(rounds, runs)
    # runs split as evenly as the rounds allow, so every model gets exactly ``runs`` calls
    per_round = [runs // rounds + (r < runs % rounds) for r in range(rounds)]
    round_s = duration_s / rounds if duration_s else None
    rows: dict[tuple[int, int, int], dict] = {}
    for t_index, n_threads in enumerate(threads):
        largest = _batches(images, max(batch_sizes))[0]
        loaded = [_load_timed(model, n_threads, largest) for model in paths]
        for b_index, batch in enumerate(batch_sizes):
            batches = _batches(images, batch)
            for item in loaded:
                for i in range(warmup):
                    item.runtime.logits(batches[i % len(batches)])
            times = interleaved_times([item.runtime for item in loaded], batches, per_round,
                                      round_s)
            round_p50 = np.array([[np.median(t) for t in per_model] for per_model in times])
            base = _latency(batch, [t for rnd in times for t in rnd[0]])
            for m_index, item in enumerate(loaded):
                lat = _latency(batch, [t for rnd in times for t in rnd[m_index]])
                rss = _rss_mb()
                row = BenchmarkRow(
                    str(item.path), batch, n_threads, item.path.stat().st_size, item.load_ms,
                    lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.throughput_ips, lat.runs, rss,
                    _peak_rss_mb(), item.rss_delta_mb, item.first_load_ms)
                rows[m_index, t_index, b_index] = {
                    **asdict(row), "p50_ratio_to_first": lat.p50_ms / base.p50_ms,
                    "p50_ratio_paired": float(np.median(round_p50[:, m_index]
                                                        / round_p50[:, 0])),
                    "size_ratio_to_first": row.size_bytes / paths[0].stat().st_size}
        del loaded
    return {"machine": machine(), "provenance": provenance(), "inputs": source,
            "settings": {"runs": runs, "duration_s": duration_s, "warmup": warmup,
                         "rounds": rounds},  # rounds as run: at most runs
            "rows": [rows[key] for key in sorted(rows)]}


def to_table(result: dict) -> str:
    """The rows as a rich table (rendered to text), with the machine and the inputs below."""
    from rich.console import Console
    from rich.table import Table

    table = Table(caption=f"{result['machine']['cpu']}, {result['machine']['cores']} cores, "
                          f"{result['machine']['platform']}; inputs: {result['inputs']}")
    columns = (("model", "left"), ("batch", "right"), ("threads", "right"),
               ("size KiB", "right"), ("load ms", "right"), ("p50 ms", "right"),
               ("p90 ms", "right"), ("p99 ms", "right"), ("img/s", "right"),
               ("+RSS MB", "right"), ("x p50", "right"), ("x paired", "right"),
               ("x size", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for r in result["rows"]:
        table.add_row(r["model"], str(r["batch_size"]), str(r["threads"]),
                      f"{r['size_bytes'] / 1024:.1f}", f"{r['load_time_ms']:.1f}",
                      f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                      f"{r['throughput_ips']:.0f}", f"{r.get('rss_delta_mb', float('nan')):.0f}",
                      f"{r['p50_ratio_to_first']:.2f}",
                      f"{r['p50_ratio_paired']:.2f}" if "p50_ratio_paired" in r else "",
                      f"{r['size_ratio_to_first']:.2f}")
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None).print(table)
    return buf.getvalue().rstrip("\n")


def to_csv(result: dict) -> str:
    """CSV of the rows (one header line)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result["rows"][0]))
    writer.writeheader()
    writer.writerows(result["rows"])
    return buf.getvalue()


def run_script(main: Callable[[], None]) -> None:
    """Run a ``benchmarks/`` script's ``main``; an error the user can fix (missing data, an
    unreadable model file, run folder, photo set or image) ends it with the message, which
    names the file or option and the fix, and exit status 2, not a traceback. Other errors
    propagate as usual.

    Raises:
        SystemExit: status 2 on such an error.
    """
    from fmnist_edge import data
    from fmnist_edge.photo_eval import PhotoSetError
    from fmnist_edge.preprocess import ImageError
    from fmnist_edge.runs import RunError

    try:
        main()
    except (data.DataError, RunError, ModelFileError, PhotoSetError, ImageError,
            FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
