"""Render Fashion-MNIST images the way product photos look, for round-trip checks of the
conversion pipeline (:mod:`fmnist_edge.preprocess`).

Each image is inverted to a white background, upscaled (bicubic) to a few hundred pixels,
placed off-centre with margins on a larger white canvas, converted to RGB, JPEG-compressed,
and in some cases stored rotated with an EXIF orientation tag that undoes the rotation.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

#: EXIF orientation tag (0x0112) values and the transpose that produces the *stored* pixels
#: from the upright photo (the inverse of what a viewer applies; EXIF 2.32, Orientation).
_EXIF_ORIENTATION = 0x0112
_ROTATIONS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
              3: Image.Transpose.ROTATE_180}


def render_photo(image: np.ndarray, rng: np.random.Generator, *, exif_rotation: bool = False,
                 jpeg_quality: int = 85) -> bytes:
    """``uint8[28, 28]`` Fashion-MNIST image -> JPEG bytes of a product-style photo.

    Args:
        image: dark background, bright object.
        rng: source of the random size, placement and margins.
        exif_rotation: store the pixels rotated with an EXIF orientation tag (6, 8 or 3).
        jpeg_quality: JPEG quality 1-95.
    """
    side = int(rng.integers(200, 420))
    photo = Image.fromarray(255 - image).resize((side, side), Image.Resampling.BICUBIC)
    width = side + int(rng.integers(40, 240))
    height = side + int(rng.integers(40, 240))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(photo.convert("RGB"), (int(rng.integers(10, width - side - 10)),
                                        int(rng.integers(10, height - side - 10))))
    exif = Image.Exif()
    if exif_rotation:
        tag = int(rng.choice(list(_ROTATIONS)))
        canvas = canvas.transpose(_ROTATIONS[tag])
        exif[_EXIF_ORIENTATION] = tag
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=jpeg_quality, exif=exif.tobytes())
    return buf.getvalue()


# --- Phone photos: the photo-domain augmentation of the training set ----------------------

#: Colours of the surfaces clothes are photographed on (floors, beds, sofas, tables, walls,
#: pavement), RGB. Chosen by eye as typical of home and street photos; no dev photo was used.
SURFACES = ((196, 170, 135), (150, 110, 75), (110, 80, 55), (225, 220, 210), (245, 243, 238),
            (170, 170, 168), (120, 122, 125), (80, 82, 88), (200, 190, 200), (180, 200, 215),
            (60, 60, 62), (140, 150, 120), (215, 200, 170), (235, 225, 200))
#: Skin tones (RGB) for the limbs of worn garments.
SKIN = ((241, 194, 160), (224, 172, 135), (198, 134, 96), (141, 85, 54), (96, 60, 40))
#: Classes photographed as a pair: Sandal, Sneaker, Ankle boot.
PAIR_CLASSES = (5, 7, 9)


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """``float32[h, w]`` smooth noise in [-1, 1]: a random ``cells``-grid upscaled bicubically."""
    grid = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 127.5 - 1.0


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``float32[h, w, 3]`` surface: a colour with texture (mottled, grain, tiles or knit)
    and an uneven light (a linear ramp and a vignette), values 0-255."""
    colour = np.array(SURFACES[rng.integers(len(SURFACES))], np.float32)
    colour = np.clip(colour + rng.normal(0, 18, 3), 0, 255)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:   # mottled (carpet, concrete, bedding)
        tex = 0.6 * _lowfreq(rng, h, w, int(rng.integers(4, 16))) + 0.4 * _lowfreq(
            rng, h, w, int(rng.integers(20, 60)))
    elif kind == 1:  # grain (wooden floor, table)
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        tex = np.sin(u / rng.uniform(2, 9) + 3 * _lowfreq(rng, h, w, 6))
    elif kind == 2:  # tiles or planks
        period = rng.uniform(18, 70)
        tex = np.where((xx % period < 2) | (yy % (period * rng.uniform(0.5, 3)) < 2), -1.5, 0.0)
        tex = tex + 0.3 * _lowfreq(rng, h, w, 10)
    else:            # fine knit / fabric
        tex = 0.7 * np.sin(xx / rng.uniform(1, 3)) * np.sin(yy / rng.uniform(1, 3))
    amplitude = rng.uniform(5, 40)
    bg = colour[None, None, :] + amplitude * tex[..., None] * rng.uniform(0.6, 1.0, 3)
    ramp = 1 + rng.uniform(-0.35, 0.35) * (xx / w - 0.5) + rng.uniform(-0.35, 0.35) * (
        yy / h - 0.5)
    r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2)
    light = ramp * (1 - rng.uniform(0, 0.6) * r2)
    return np.clip(bg * light[..., None], 0, 255)


def _garment(image: np.ndarray, rng: np.random.Generator, side: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Upscale ``uint8[28, 28]`` to ``side`` pixels: returns ``(float32 RGB, float32 alpha)``.

    The object's luminance is the negated image, as on the studio photo it came from, then
    tinted with a random colour and given a random contrast (a coloured garment)."""
    up = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC),
                    dtype=np.float32)
    alpha = np.clip((up - 20) / 30, 0, 1)
    # Edge pixels take the luminance of the object next to them, not of the studio's white.
    lum = 255 - np.asarray(Image.fromarray(up.astype(np.uint8)).filter(ImageFilter.MaxFilter(5)),
                           dtype=np.float32)
    contrast = rng.uniform(0.5, 1.1)
    lum = np.clip(lum.mean() + (lum - lum.mean()) * contrast + rng.normal(0, 25), 0, 255)
    tint = rng.uniform(0.4, 1.0, 3) if rng.random() < 0.6 else np.ones(3)
    rgb = lum[..., None] * tint[None, None, :]
    return np.clip(rgb, 0, 255), alpha


def render_phone_photo(image: np.ndarray, label: int, rng: np.random.Generator, *,
                       size: int = 160, worn_prob: float = 0.3, pair_prob: float = 0.5
                       ) -> Image.Image:
    """``uint8[28, 28]`` Fashion-MNIST image -> an RGB phone photo of it (Pillow image).

    A textured, coloured surface under uneven light; the garment (tinted, its own contrast)
    with a soft shadow; for shoes (``PAIR_CLASSES``) sometimes its twin beside it; with
    ``worn_prob`` skin-coloured limbs and another garment touching it, as in street photos;
    then a small rotation and perspective, blur, sensor noise and JPEG compression.

    Args:
        image: dark background, bright object.
        label: its class index (0-9), for the pair rule.
        rng: the only source of randomness (seeded by the caller).
        size: longest edge of the photo, pixels.
        worn_prob: probability of limbs and a neighbouring garment.
        pair_prob: probability that a shoe is photographed as a pair.
    """
    h = size
    w = int(size * rng.uniform(0.75, 1.0)) if rng.random() < 0.5 else size
    if rng.random() < 0.5:
        h, w = w, h
    canvas = _background(rng, h, w)
    pair = label in PAIR_CLASSES and rng.random() < pair_prob
    side = int(min(h, w) * rng.uniform(0.55, 0.95) / (1.6 if pair else 1.0))
    rgb, alpha = _garment(image, rng, side)
    placements = []
    y0 = int(rng.integers(0, max(1, h - side)))
    x0 = int(rng.integers(0, max(1, w - side)))
    if pair:
        gap = int(side * rng.uniform(-0.1, 0.3))
        x0 = int(rng.integers(0, max(1, w - 2 * side - gap)))
        twin_flip = rng.random() < 0.5
        placements.append((y0 + int(rng.integers(-side // 8, side // 8 + 1)), x0 + side + gap,
                           rgb[:, ::-1] if twin_flip else rgb,
                           alpha[:, ::-1] if twin_flip else alpha))
    placements.insert(0, (y0, x0, rgb, alpha))
    if rng.random() < worn_prob:
        _add_distractors(canvas, rng, y0, x0, side)
    for y, x, obj, a in placements:
        _paste_with_shadow(canvas, rng, obj, a, y, x)
    photo = Image.fromarray(canvas.astype(np.uint8))
    return _camera(photo, rng)


def _add_distractors(canvas: np.ndarray, rng: np.random.Generator, y0: int, x0: int,
                     side: int) -> None:
    """Draw limbs (skin ellipses) and a neighbouring garment (a block) touching the object."""
    from PIL import ImageDraw

    h, w = canvas.shape[:2]
    layer = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(1, 3))):
        skin = tuple(int(c) for c in np.clip(np.array(SKIN[rng.integers(len(SKIN))])
                                             + rng.normal(0, 12, 3), 0, 255))
        cx = x0 + int(rng.uniform(0, side))
        cy = y0 + (0 if rng.random() < 0.5 else side)
        rw, rh = int(side * rng.uniform(0.06, 0.14)), int(side * rng.uniform(0.2, 0.45))
        draw.ellipse((cx - rw, cy - rh, cx + rw, cy + rh), fill=skin)
    if rng.random() < 0.6:
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        band = int(side * rng.uniform(0.1, 0.35))
        if rng.random() < 0.5:
            box = (x0 + side // 6, max(0, y0 - band), x0 + side - side // 6, y0 + 2)
        else:
            box = (x0 + side // 6, y0 + side - 2, x0 + side - side // 6, min(h, y0 + side + band))
        draw.rectangle(box, fill=colour)
    canvas[:] = np.asarray(layer, dtype=np.float32)


def _paste_with_shadow(canvas: np.ndarray, rng: np.random.Generator, obj: np.ndarray,
                       alpha: np.ndarray, y: int, x: int) -> None:
    """Alpha-blend ``obj`` at ``(y, x)`` (clipped to the canvas) after a soft shadow."""
    h, w = canvas.shape[:2]
    s = obj.shape[0]
    dy, dx = int(rng.integers(-4, 9)), int(rng.integers(-6, 7))
    blur = ImageFilter.GaussianBlur(rng.uniform(2, 6))
    shadow = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(blur),
                        dtype=np.float32) / 255 * rng.uniform(0.15, 0.5)
    for (oy, ox, layer) in ((y + dy, x + dx, None), (y, x, obj)):
        ys, xs = max(0, oy), max(0, ox)
        ye, xe = min(h, oy + s), min(w, ox + s)
        if ye <= ys or xe <= xs:
            continue
        region = canvas[ys:ye, xs:xe]
        cut = (slice(ys - oy, ye - oy), slice(xs - ox, xe - ox))
        if layer is None:
            region *= (1 - shadow[cut])[..., None]
        else:
            a = alpha[cut][..., None]
            region[:] = region * (1 - a) + layer[cut] * a


def _camera(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Small rotation and perspective, defocus blur, sensor noise, JPEG round trip."""
    w, h = photo.size
    d = 0.06
    quad = [v + rng.uniform(-d, d) * s for v, s in
            zip((0, 0, 0, h, w, h, w, 0), (w, h, w, h, w, h, w, h))]
    photo = photo.transform((w, h), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR,
                            fillcolor=tuple(int(c) for c in np.asarray(photo)[0, 0]))
    photo = photo.rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR, expand=False,
                         fillcolor=tuple(int(c) for c in np.asarray(photo)[0, 0]))
    if rng.random() < 0.7:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    arr = np.asarray(photo, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8),
                                                           (h, w, 1))
    photo = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=int(rng.integers(40, 95)))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def reference_photo(image: np.ndarray, label: int, size: tuple[int, int] = (400, 533)
                    ) -> Image.Image:
    """The phone photo the benchmarks time and load with: ``image`` rendered by
    :func:`render_phone_photo` with seed 0 and resized to ``size`` (width, height; a phone
    photo as messengers downscale it), RGB."""
    photo = render_phone_photo(image, label, np.random.default_rng(0), size=max(size))
    return photo.resize(size)
