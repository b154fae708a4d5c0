"""Conversion steps tried on the real-photo development set, side by side with one model:
what each step of the GrabCut conversion adds or costs (top-1 per kind). Only ``lay_flat``
was kept (it is what ``predict`` runs); the others are recorded so they are not tried again.

    python benchmarks/conversion_variants.py --photos ../shared/realphotos-dev \\
        --model fmnist_edge/models/default_int8.tflite \\
        --out benchmarks/results/experiments/conversion_variants_dev.json

Variants: ``plain`` (mask, largest component, no pair rule), ``lay_flat`` (the shipped
conversion: one shoe of a pair laid on its side), ``centre_retry`` (when the first cut is
empty, GrabCut again with the central 20 % as sure foreground, instead of the whole frame),
``column_split`` (touching shoes split at a column valley under 15 % of the height),
``erode_split`` (touching shoes split by erosion until two similar parts appear),
``orient_wide`` (a pair's wide shoe turned so the taller end is right), ``mirror_average``
(the logits of the image and its mirror image averaged).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist_edge import atomic, preprocess, segment
from fmnist_edge.benchmark import run_script
from fmnist_edge.photo_eval import read_photo_set
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load

VARIANTS = ("plain", "lay_flat", "centre_retry", "column_split", "erode_split",
            "orient_wide", "mirror_average")


def _centre_retry(rgb: np.ndarray) -> np.ndarray:
    """GrabCut seeded with the border as background and the central 20 % as foreground."""
    import cv2

    cv2.setRNGSeed(0)
    h, w = rgb.shape[:2]
    scale = min(1.0, segment.WORK_SIZE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)[..., ::-1].copy()
    sh, sw = small.shape[:2]
    bx, by = max(1, round(sw * segment.BORDER)), max(1, round(sh * segment.BORDER))
    mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    mask[by:sh - by, bx:sw - bx] = cv2.GC_PR_FGD
    cy, cx = round(sh * 0.4), round(sw * 0.4)
    mask[cy:sh - cy, cx:sw - cx] = cv2.GC_FGD
    cv2.grabCut(small, mask, None, np.zeros((1, 65)), np.zeros((1, 65)), segment.ITERATIONS,
                cv2.GC_INIT_WITH_MASK)
    return segment.clean((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))[0]


def _column_split(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    profile = box.mean(axis=0)
    lo, hi = int(box.shape[1] * 0.3), int(box.shape[1] * 0.7)
    if hi - lo < 2:
        return mask, False
    v = lo + int(np.argmin(profile[lo:hi]))
    left, right = box[:, :v].sum(), box[:, v + 1:].sum()
    if profile[v] > 0.15 or min(left, right) < 0.35 * max(left, right):
        return mask, False
    out = np.zeros_like(mask)
    if left >= right:
        out[rows[0]:rows[-1] + 1, cols[0]:cols[0] + v] = box[:, :v]
    else:
        out[rows[0]:rows[-1] + 1, cols[0] + v + 1:cols[-1] + 1] = box[:, v + 1:]
    return segment.clean(out)[0], True


def _erode_split(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    import cv2

    kernel, m8 = np.ones((3, 3), np.uint8), mask.astype(np.uint8)
    for it in range(1, 7):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.erode(m8, kernel,
                                                                          iterations=it))
        if n - 1 == 0:
            break
        if n - 1 >= 2:
            areas = stats[1:, cv2.CC_STAT_AREA]
            order = np.argsort(-areas)
            if areas[order[1]] < 0.35 * areas[order[0]]:
                break
            keep = cv2.dilate((labels == 1 + order[0]).astype(np.uint8), kernel,
                              iterations=it) & m8
            return keep.astype(bool), True
    return mask, False


def convert(img: Image.Image, variant: str) -> np.ndarray:
    """``uint8[28, 28]`` of ``img`` through ``variant`` of the GrabCut conversion."""
    rgb = np.asarray(preprocess.to_rgb(img))
    if preprocess.clean_background(rgb):
        return preprocess.convert(img, "trim").pixels
    found = segment.foreground_mask(rgb)
    mask, pair = found.mask, found.components >= 2
    if not found.plausible:
        if variant == "centre_retry":
            mask = _centre_retry(rgb)
        if not found.plausible and (variant != "centre_retry" or not mask.any()):
            return preprocess.compose_on_black(rgb, np.ones(found.mask.shape, bool))
    if variant == "column_split":
        mask, split = _column_split(mask)
        pair |= split
    if variant == "erode_split":
        mask, split = _erode_split(mask)
        pair |= split
    if variant == "orient_wide" and pair:
        pixels = preprocess.compose_on_black(rgb, mask, lay_flat=True)
        heights = (pixels > 20).sum(axis=0)
        wide = (pixels > 20).any(0).sum() > 1.3 * (pixels > 20).any(1).sum()
        if wide and heights[:14].mean() > heights[14:].mean():
            return np.ascontiguousarray(pixels[:, ::-1])
        return pixels
    return preprocess.compose_on_black(rgb, mask, lay_flat=pair and variant != "plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    photos = read_photo_set(args.photos)
    decoded = [preprocess.open_image(p.path) for p in photos]
    runtime = load(args.model)
    results = {}
    for variant in VARIANTS:
        base = "lay_flat" if variant == "mirror_average" else variant
        pixels = np.stack([convert(img, base) for img in decoded])
        logits = runtime.logits(pixels)
        if variant == "mirror_average":
            logits = logits + runtime.logits(np.ascontiguousarray(pixels[:, :, ::-1]))
        correct = logits.argmax(1) == np.array([p.label for p in photos])
        hits, total = Counter(), Counter()
        for p, ok in zip(photos, correct):
            for key in (p.kind, "all"):
                hits[key] += int(ok)
                total[key] += 1
        results[variant] = {k: hits[k] / total[k] for k in sorted(total)}
        print(f"{variant:15} " + "  ".join(f"{k} {v:.1%}" for k, v in results[variant].items()))
    atomic.write_json(args.out, {"photos": str(args.photos), "model": str(args.model),
                                 "count": len(photos), "top1_by_variant": results,
                                 "kept": "lay_flat", "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
