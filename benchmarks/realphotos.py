"""Real photos: top-1 of ``predict``'s pipeline per kind and per class, for each foreground
method and each model given, on a labelled photo folder (the development set
``../shared/realphotos-dev``), plus the conversion time of one photo on one core.

    python benchmarks/realphotos.py --photos ../shared/realphotos-dev \\
        --model fmnist_edge/models/default_int8.onnx --out benchmarks/results/realphotos_dev.json

The development set is for tuning only (never for training): quote it as a development
figure, not as an independent test result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, preprocess
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.photo_eval import evaluate_photos, read_photo_set
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def conversion_ms(paths: list[Path], segment: str, repeats: int = 3) -> dict[str, float]:
    """p50/p90 ms of :func:`fmnist_edge.preprocess.convert` (decoded image in, 28x28 out),
    on one thread, best of ``repeats`` per photo."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    times = []
    for path in paths:
        img = preprocess.open_image(path)
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            preprocess.convert(img, segment)
            best = min(best, time.perf_counter() - t0)
        times.append(best * 1000)
    return {"p50_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "photos": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--label", action="append", default=[],
                        help="a name per --model for the README table")
    parser.add_argument("--segments", default=",".join(preprocess.SEGMENTS))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--timing-photos", type=int, default=60,
                        help="photos timed for the conversion cost (every k-th of the set)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.timing_photos < 1:
        parser.error(f"--timing-photos must be at least 1, got {args.timing_photos}")
    segments = [s for s in args.segments.split(",") if s]
    photos = read_photo_set(args.photos)
    step = max(1, len(photos) // args.timing_photos)
    timed = [p.path for p in photos[::step]]
    sizes = [preprocess.open_image(p).size for p in timed]
    results = []
    labels = args.label + [None] * (len(args.model) - len(args.label))
    for model, label in zip(args.model, labels):
        runtime = load(model)
        for segment in segments:
            report = evaluate_photos(args.photos, runtime, segment=segment)
            report.pop("folder")
            row = {"model": str(model), "label": label, "model_sha256": runtime.card.sha256,
                   "segment": segment, **report}
            results.append(row)
            kinds = "  ".join(f"{k} {v['top1_accuracy']:.1%}"
                              for k, v in report["per_kind"].items())
            print(f"{model.name} {segment:8} all {report['top1_accuracy']:.1%}  {kinds}")
    timing = {s: conversion_ms(timed, s) for s in segments}
    # The bar's photo size: a 400x533 phone photo rendered from a test image.
    import tempfile

    from fmnist_edge import data
    from fmnist_edge.photos import reference_photo

    images, labels = data.load_split("test", args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo_400x533.jpg"
        reference_photo(images[0], int(labels[0])).save(photo, quality=90)
        big = {s: conversion_ms([photo] * 20, s, repeats=1) for s in segments}
    for s, t in timing.items():
        print(f"conversion {s:8} p50 {t['p50_ms']:.1f} ms, p90 {t['p90_ms']:.1f} ms "
              f"(one thread); 400x533 photo p50 {big[s]['p50_ms']:.1f} ms")
    atomic.write_json(args.out, {
        "photos": str(args.photos), "count": len(photos), "results": results,
        "conversion": {"timed_photos": len(timed),
                       "median_size_px": [int(np.median([s[0] for s in sizes])),
                                          int(np.median([s[1] for s in sizes]))],
                       **timing, "photo_400x533": big},
        "machine": machine(),
        "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
