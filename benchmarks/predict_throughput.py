"""End-to-end ``predict`` throughput (decode, convert, classify) on a folder of 5,000
Fashion-MNIST test PNGs and on a folder of photos, pinned to one core and on all cores.

    python benchmarks/predict_throughput.py --photos ../shared/realphotos-dev \\
        --out benchmarks/results/predict_throughput_<cpu>.json

The model is the one ``fmnist-edge predict`` loads (:func:`fmnist_edge.predict.load_model`:
the default model for the installed runtimes). It runs with one inference thread and with
one per core, the two taking turns for ``--rounds`` rounds on the PNGs and for one round on
the photos (GrabCut dominates), so predict's thread default rests on a side-by-side ratio,
not on two runs of a noisy machine. A rate is the median over rounds of images classified
per second of wall time. ``<cpu>`` names the machine class
(``xeon_amx``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.predict import PREDICT_THREADS, load_model, predict_paths
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def rate(folder: Path, runtime) -> tuple[float, int]:
    """One ``predict`` pass over ``folder``: images per second of wall time, and the count."""
    t0 = time.perf_counter()
    count = len(predict_paths([folder], runtime))
    return count / (time.perf_counter() - t0), count


def pin(cores: set[int]) -> None:
    """Pin every thread of this process to ``cores``. ``os.sched_setaffinity(0, ...)`` pins
    only the calling thread (and threads it starts later): the inference libraries' thread
    pools, started when a model loads, would keep running on the other cores."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def measure(folder: Path, runtimes: dict[str, object], cores: int, rounds: int
            ) -> dict[str, tuple[float, int]]:
    """Median images/s of each runtime (``{threads label: runtime}``) over ``rounds``
    interleaved passes, the whole process pinned to the first ``cores`` cores."""
    all_cores = os.sched_getaffinity(0)
    rates: dict[str, list[float]] = {label: [] for label in runtimes}
    counts: dict[str, int] = {}
    pin(set(sorted(all_cores)[:cores]))
    try:
        for _ in range(rounds):
            for label, runtime in runtimes.items():
                r, counts[label] = rate(folder, runtime)
                rates[label].append(r)
    finally:
        pin(all_cores)
    return {label: (float(np.median(v)), counts[label]) for label, v in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = load_model(args.model).path
    all_cores = len(os.sched_getaffinity(0))
    runtimes = {str(n): load(model, num_threads=n) for n in sorted({1, all_cores})}
    images = data.load_split("test", args.data_dir)[0][:5000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pngs = Path(tmp)
        for i, image in enumerate(images):
            Image.fromarray(image).save(pngs / f"{i:05d}.png")
        for name, folder, chosen, rounds in (
                ("5,000 Fashion-MNIST PNGs", pngs, runtimes, args.rounds),
                ("photos", args.photos, runtimes, 1)):
            for cores in sorted({1, all_cores}):
                for label, (r, count) in measure(folder, chosen, cores, rounds).items():
                    rows.append({"input": name, "images": count, "cores": cores,
                                 "inference_threads": label, "rounds": rounds,
                                 "images_per_s": r})
                    print(f"{name:26} {cores} core(s), {label:>15} inference threads: "
                          f"{r:7.0f} img/s")
    atomic.write_json(args.out, {"model": str(model), "predict_threads": PREDICT_THREADS,
                                 "rows": rows, "machine": machine(),
                                 "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
