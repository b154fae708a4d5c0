"""End-to-end ``predict`` throughput (decode, convert, classify) on a folder of 5,000
Fashion-MNIST test PNGs and on a folder of photos, pinned to one core and on all cores.

    python benchmarks/predict_throughput.py --photos ../shared/realphotos-dev \\
        --out benchmarks/results/predict_throughput.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import machine
from fmnist_edge.predict import default_model, predict_paths
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def images_per_s(folder: Path, runtime, repeats: int = 3) -> tuple[float, int]:
    """Best of ``repeats``: images classified per second of wall time, and the count."""
    best, count = 0.0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        count = len(predict_paths([folder], runtime))
        best = max(best, count / (time.perf_counter() - t0))
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = args.model or default_model()
    runtime = load(model, num_threads=1)
    images = data.load_split("test", args.data_dir)[0][:5000]
    rows = []
    all_cores = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp:
        pngs = Path(tmp)
        for i, image in enumerate(images):
            Image.fromarray(image).save(pngs / f"{i:05d}.png")
        for name, folder in (("5,000 Fashion-MNIST PNGs", pngs), ("photos", args.photos)):
            for cores in (1, len(all_cores)):
                os.sched_setaffinity(0, sorted(all_cores)[:cores])
                try:
                    rate, count = images_per_s(folder, runtime)
                finally:
                    os.sched_setaffinity(0, all_cores)
                rows.append({"input": name, "images": count, "cores": cores,
                             "images_per_s": rate})
                print(f"{name:26} {cores} core(s): {rate:7.0f} img/s")
    atomic.write_json(args.out, {"model": str(model), "rows": rows, "machine": machine(),
                                 "provenance": provenance()})


if __name__ == "__main__":
    main()
