"""What GrabCut's working size and iterations cost and buy on the real-photo development set:
top-1 per kind with one model, and the conversion time per photo on one core.

``predict``'s conversion runs GrabCut on a copy whose longest edge is
``segment.WORK_SIZE`` pixels for ``segment.ITERATIONS`` iterations; on photos that is nearly
all of ``predict``'s time. This script runs the same conversion with other settings (each
photo decoded once, the settings taking turns on it, so a slow moment of the machine hits
them alike) to show what a cheaper one would lose.

    python benchmarks/grabcut_cost.py --photos ../shared/realphotos-dev \\
        --model fmnist_edge/models/default_int8.tflite \\
        --out benchmarks/results/experiments/grabcut_cost_dev.json

The development set is for tuning only (never for training): quote it as a development
figure, not as an independent test result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import numpy as np

from fmnist_edge import atomic, preprocess, segment
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.photo_eval import read_photo_set
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load

#: (working size px, iterations); the first is the shipped setting.
SETTINGS = ((segment.WORK_SIZE, segment.ITERATIONS), (96, 3), (80, 4), (64, 5), (64, 3),
            (48, 5), (128, 5))


def sweep(photos, runtime, settings=SETTINGS) -> list[dict]:
    """Convert every photo with every setting; return one row per setting: ``work_size``,
    ``iterations``, ``top1_accuracy``, ``per_kind`` (fractions 0-1), ``p50_ms``, ``p90_ms``
    (conversion of a decoded photo, ms)."""
    pixels = {s: [] for s in settings}
    times = {s: [] for s in settings}
    for photo in photos:
        img = preprocess.open_image(photo.path)
        for work_size, iterations in settings:
            with mock.patch.dict(segment.grabcut.__kwdefaults__,
                                 {"work_size": work_size, "iterations": iterations}):
                start = time.perf_counter()
                prepared = preprocess.convert(img, "grabcut")
                times[(work_size, iterations)].append(time.perf_counter() - start)
            pixels[(work_size, iterations)].append(prepared.pixels)
    labels = np.array([p.label for p in photos])
    kinds = np.array([p.kind for p in photos])
    rows = []
    for setting in settings:
        correct = runtime.logits(np.stack(pixels[setting])).argmax(1) == labels
        ms = np.asarray(times[setting]) * 1e3
        rows.append({"work_size": setting[0], "iterations": setting[1],
                     "top1_accuracy": float(correct.mean()),
                     "per_kind": {k: float(correct[kinds == k].mean())
                                  for k in sorted(set(kinds))},
                     "p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    photos = read_photo_set(args.photos)
    rows = sweep(photos, load(args.model, num_threads=1))
    atomic.write_json(args.out, {"photos": str(args.photos), "count": len(photos),
                                 "model": str(args.model), "rows": rows,
                                 "machine": machine(), "provenance": provenance()})
    for r in rows:
        kinds = "  ".join(f"{k} {v:.1%}" for k, v in r["per_kind"].items())
        print(f"work {r['work_size']:3d} px, {r['iterations']} it: top-1 "
              f"{r['top1_accuracy']:.1%} ({kinds}); p50 {r['p50_ms']:.1f} ms")


if __name__ == "__main__":
    run_script(main)
