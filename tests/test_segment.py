"""Foreground segmentation (GrabCut) before the Fashion-MNIST conversion: synthetic photos
the test draws itself (an object on a textured background), the pair rule, the clean-
background rule and the fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from fmnist_edge import preprocess, segment


def _textured_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A wooden-floor-like surface: a colour, grain stripes, blotches and a light ramp."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = rng.uniform(90, 200, 3)
    grain = 18 * np.sin(xx / rng.uniform(2, 6) + 2 * np.sin(yy / 37.0))
    blotches = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8))
                          .resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255 * 40 - 20
    light = 0.8 + 0.4 * xx / w
    bg = (colour[None, None] + (grain + blotches)[..., None]) * light[..., None]
    return np.clip(bg + rng.normal(0, 4, (h, w, 3)), 0, 255)


def _garment_mask(h: int, w: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A T-shirt silhouette (body and two sleeves) filling ``box``, as a mode-L mask."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    draw.rectangle((x0 + bw * 0.25, y0, x1 - bw * 0.25, y1), fill=255)
    draw.polygon([(x0 + bw * 0.25, y0), (x0, y0 + bh * 0.3), (x0 + bw * 0.1, y0 + bh * 0.42),
                  (x0 + bw * 0.25, y0 + bh * 0.3)], fill=255)
    draw.polygon([(x1 - bw * 0.25, y0), (x1, y0 + bh * 0.3), (x1 - bw * 0.1, y0 + bh * 0.42),
                  (x1 - bw * 0.25, y0 + bh * 0.3)], fill=255)
    return mask


def _photo(rng: np.random.Generator, masks: list[Image.Image], h: int = 400, w: int = 300
           ) -> np.ndarray:
    """Objects (shaded, coloured, softly edged) with shadows on a textured background."""
    bg = _textured_background(rng, h, w)
    for mask in masks:
        alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(1.2)), np.float32)[..., None] / 255
        shadow = np.asarray(mask.filter(ImageFilter.GaussianBlur(8)), np.float32)[..., None]
        bg *= 1 - 0.3 * np.roll(shadow, (6, 4), axis=(0, 1)) / 255
        colour = rng.uniform(0, 255, 3)
        shade = 0.75 + 0.25 * np.asarray(
            Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)).resize(
                (w, h), Image.Resampling.BICUBIC), np.float32)[..., None] / 255
        bg = bg * (1 - alpha) + colour * shade * alpha
    return np.clip(bg, 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _at(mask: Image.Image, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(mask.resize((shape[1], shape[0]), Image.Resampling.BOX)) >= 128


@pytest.mark.parametrize("seed", range(6))
def test_grabcut_mask_covers_an_object_on_a_textured_background(seed):
    rng = np.random.default_rng(seed)
    h, w = 400, 300
    x0, y0 = int(rng.integers(30, 70)), int(rng.integers(40, 110))
    truth = _garment_mask(h, w, (x0, y0, x0 + int(rng.integers(170, 220)),
                                 y0 + int(rng.integers(200, 250))))
    photo = _photo(rng, [truth], h, w)
    found = segment.foreground_mask(photo)
    assert found.plausible, found.reason
    assert max(found.mask.shape) == segment.WORK_SIZE
    assert _iou(found.mask, _at(truth, found.mask.shape)) >= 0.8


def test_the_conversion_puts_the_object_on_black_and_fills_the_frame():
    rng = np.random.default_rng(7)
    truth = _garment_mask(400, 300, (60, 100, 240, 320))
    out = preprocess.convert(Image.fromarray(_photo(rng, [truth])), "grabcut")
    assert out.segment == "grabcut" and out.fallback is None and out.mask is not None
    px = out.pixels
    # The textured background is gone: black outside the object, no grey frame.
    assert px[:, :2].max() < 30 and px[:, -2:].max() < 30
    # Longest edge 28: the object (taller than wide) spans the full height.
    rows = np.flatnonzero(px.max(axis=1) > 20)
    assert rows[0] <= 1 and rows[-1] >= 26
    # The trim of the paper cannot remove the textured background: a frame stays.
    trimmed = preprocess.convert(Image.fromarray(_photo(rng, [truth])), "trim").pixels
    assert trimmed[:, :2].mean() > 30 or trimmed[:2].mean() > 30


def test_pair_rule_keeps_one_shoe():
    rng = np.random.default_rng(3)
    h, w = 300, 400
    left, right = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
    for mask, x in ((left, 40), (right, 215)):  # two shoes side by side, a gap between them
        ImageDraw.Draw(mask).polygon([(x, 200), (x + 10, 140), (x + 60, 130), (x + 80, 160),
                                      (x + 150, 180), (x + 150, 215), (x, 215)], fill=255)
    photo = _photo(rng, [left, right], h, w)
    found = segment.foreground_mask(photo)
    assert found.plausible and found.components == 2
    shape = found.mask.shape
    one = [_iou(found.mask, _at(m, shape)) for m in (left, right)]
    assert max(one) >= 0.8  # exactly one of the two shoes is kept
    assert min(one) < 0.1
    # The converted image shows one shoe filling the width, not two small ones.
    px = preprocess.convert(Image.fromarray(photo), "grabcut").pixels
    cols = np.flatnonzero(px.max(axis=0) > 20)
    assert cols[0] <= 1 and cols[-1] >= 26
    assert (px.max(axis=0) > 20).all()  # no gap between two shoes


def test_one_shoe_of_a_pair_seen_from_above_is_laid_on_its_side():
    rng = np.random.default_rng(5)
    h, w = 400, 400
    left, right = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
    for mask, x in ((left, 70), (right, 230)):  # two shoes from above, toes up, apart
        ImageDraw.Draw(mask).ellipse((x, 60, x + 95, 340), fill=255)
    photo = Image.fromarray(_photo(rng, [left, right], h, w))
    out = preprocess.convert(photo, "grabcut")
    rows = np.flatnonzero(out.pixels.max(axis=1) > 20)
    cols = np.flatnonzero(out.pixels.max(axis=0) > 20)
    assert len(cols) >= 26 and len(rows) <= 14  # one shoe, lying: wide, not tall
    # One garment taller than wide (no pair) keeps its orientation.
    single = Image.new("L", (w, h), 0)
    ImageDraw.Draw(single).rectangle((130, 40, 270, 360), fill=255)
    out = preprocess.convert(Image.fromarray(_photo(rng, [single], h, w)), "grabcut")
    assert len(np.flatnonzero(out.pixels.max(axis=1) > 20)) >= 26


def test_studio_shot_keeps_the_papers_trim():
    photo = Image.new("RGB", (300, 400), "white")
    photo.paste(Image.new("RGB", (100, 250), (40, 40, 40)), (100, 80))
    out = preprocess.convert(photo, "grabcut")
    assert out.segment == "trim" and out.fallback is None


def test_fallback_when_nothing_plausible_is_found(monkeypatch):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(_textured_background(rng, 200, 200).astype(np.uint8))
    empty = segment.Mask(np.zeros((96, 96), bool), 0.0, False, 0, "foreground covers 0.0%")
    monkeypatch.setattr(segment, "foreground_mask", lambda rgb: empty)
    out = preprocess.convert(photo, "grabcut")
    assert out.segment == "none" and "0.0%" in out.fallback
    assert out.pixels.shape == (28, 28) and out.pixels.dtype == np.uint8


def test_fallback_without_opencv(monkeypatch):
    def missing():
        raise segment.SegmentationUnavailable("no cv2: pip install opencv-python-headless")

    monkeypatch.setattr(segment, "_cv2", missing)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(_photo(rng, [_garment_mask(400, 300, (60, 100, 240, 320))]))
    out = preprocess.convert(photo, "grabcut")
    assert out.segment == "trim" and "no cv2" in out.fallback


def test_a_tiny_mask_is_not_plausible():
    rng = np.random.default_rng(1)
    speck = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(speck).ellipse((145, 145, 152, 152), fill=255)
    found = segment.foreground_mask(_photo(rng, [speck], 300, 300))
    assert not found.plausible and "covers" in found.reason


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="grabcut, trim, none"):
        preprocess.convert(Image.new("RGB", (50, 50)), "deeplab")
