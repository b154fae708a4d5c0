"""Foreground mask of a photo: OpenCV's GrabCut, initialised from the image border.

A phone photo of a garment has a real background (floor, bed, street) that the trim of the
Fashion-MNIST pipeline cannot remove. GrabCut (Rother, Kolmogorov & Blake 2004, "GrabCut:
interactive foreground extraction using iterated graph cuts", SIGGRAPH) models the colours of
background and foreground with Gaussian mixtures and cuts the image between them. Here it is
initialised with a frame: the outer ``BORDER`` of the image is background, the rest probably
foreground, as a person photographing one item centres it. The mask is computed on a copy
whose longest edge is ``WORK_SIZE`` pixels (the model sees 28x28, so a finer mask changes
nothing it sees) and then cleaned: the main connected component is kept and its holes are
filled.

OpenCV (``opencv-python-headless``, a dependency) is imported when a mask is first asked for,
so commands that convert no photo do not pay for it. Where it is missing (e.g. removed to save
space on a device), :func:`available` is ``False`` and the conversion falls back to the trim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmnist_edge.provenance import installed

#: Longest edge (pixels) of the copy GrabCut runs on.
WORK_SIZE = 96
#: Fraction of each side taken as sure background when initialising GrabCut.
BORDER = 0.04
#: GrabCut iterations (OpenCV's examples use 5; the mask is stable after 4-5 here).
ITERATIONS = 5
#: A mask covering less than this fraction of the image is not plausible (nothing found).
MIN_AREA = 0.02
#: A mask covering more than this fraction is not plausible (background not separated).
MAX_AREA = 0.97
#: A second component at least this large (relative to the largest) is a pair's twin.
PAIR_RATIO = 0.35


class SegmentationUnavailable(ImportError):
    """OpenCV is not installed (``pip install opencv-python-headless``)."""


@dataclass(frozen=True)
class Mask:
    """A foreground mask: ``mask`` ``bool[h, w]`` at GrabCut's working size (``WORK_SIZE``),
    ``area`` its fraction of the image (0-1), ``plausible`` whether it can be used, and
    ``components`` how many sizeable parts GrabCut found before the main one was kept."""

    mask: np.ndarray
    area: float
    plausible: bool
    components: int
    reason: str = ""


def available() -> bool:
    """Whether OpenCV can be imported."""
    return installed("cv2")


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise SegmentationUnavailable(
            f"foreground segmentation needs OpenCV ({exc}): pip install "
            "opencv-python-headless, or use --segment trim") from exc
    return cv2


def grabcut(rgb: np.ndarray, *, work_size: int = WORK_SIZE, border: float = BORDER,
            iterations: int = ITERATIONS, seed: int = 0) -> np.ndarray:
    """Raw GrabCut foreground of ``uint8[H, W, 3]`` RGB, initialised from the border frame.

    Returns:
        ``bool[h, w]`` at the working size (longest edge ``work_size``, never upscaled).

    Raises:
        SegmentationUnavailable: OpenCV missing.
    """
    cv2 = _cv2()
    cv2.setRNGSeed(seed)  # GrabCut's GMM initialisation uses k-means: keep it repeatable
    h, w = rgb.shape[:2]
    scale = min(1.0, work_size / max(h, w))
    small = (cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                        interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb)
    sh, sw = small.shape[:2]
    bx, by = max(1, round(sw * border)), max(1, round(sh * border))
    if sw - 2 * bx < 2 or sh - 2 * by < 2:
        return np.ones((sh, sw), dtype=bool)
    mask = np.zeros((sh, sw), np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(small[..., ::-1])
    cv2.grabCut(bgr, mask, (bx, by, sw - 2 * bx, sh - 2 * by), bgd, fgd, iterations,
                cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def clean(mask: np.ndarray, *, pair_ratio: float = PAIR_RATIO) -> tuple[np.ndarray, int]:
    """Keep the largest 8-connected component of ``bool[H, W]`` and fill its holes.

    Returns:
        ``(bool[H, W], components)``: the cleaned mask and how many components were at least
        ``pair_ratio`` of the largest one (2 for a pair of shoes photographed apart).
    """
    cv2 = _cv2()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                               connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool), 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = 1 + int(np.argmax(areas))
    components = int((areas >= pair_ratio * areas.max()).sum())
    keep = (labels == main).astype(np.uint8)
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(keep)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool), components


def foreground_mask(rgb: np.ndarray, **kwargs) -> Mask:
    """Foreground mask of ``uint8[H, W, 3]`` RGB: GrabCut, main component, holes filled.

    Args:
        rgb: the photo.
        **kwargs: passed to :func:`grabcut` (``work_size``, ``border``, ``iterations``).

    Returns:
        :class:`Mask` at the working resolution; ``plausible`` is ``False`` (with the reason)
        when the mask covers less than ``MIN_AREA`` or more than ``MAX_AREA`` of the image.

    Raises:
        SegmentationUnavailable: OpenCV missing.
    """
    raw = grabcut(rgb, **kwargs)
    mask, components = clean(raw)
    area = float(mask.mean())
    if area < MIN_AREA:
        return Mask(mask, area, False, components,
                    f"foreground covers {area:.1%} of the image (< {MIN_AREA:.0%})")
    if area > MAX_AREA:
        return Mask(mask, area, False, components,
                    f"foreground covers {area:.1%} of the image (> {MAX_AREA:.0%}): "
                    "background not separated")
    return Mask(mask, area, True, components)
