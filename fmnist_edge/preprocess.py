"""Photo -> ``uint8[28, 28]``: the Fashion-MNIST conversion pipeline.

Xiao, Rasul & Vollgraf 2017 (arXiv:1708.07747), section 2, applied to each product photo:
  1. trim the edges close to the corner colour (within 5 % of the maximum intensity),
  2. resize the longest edge to 28 by subsampling,
  3. sharpen with a Gaussian operator (radius and standard deviation 1.0),
  4. extend the shortest edge to 28 and centre the image on the canvas,
  5. negate the intensities,
  6. convert to 8-bit grayscale.
Decoding is Pillow's. EXIF orientation is applied first; transparent images are composited
on white; palette, 16-bit, CMYK and other modes are converted. An image that already is
28x28 with a dark background (a Fashion-MNIST-style image) passes through untouched.
Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from fmnist_edge.contract import IMAGE_SIZE

#: Trim tolerance: 5 % of the maximum intensity (paper, step 2), as RMS distance over RGB.
TRIM_TOLERANCE = 0.05 * 255
#: Sharpening: unsharp mask with a Gaussian of radius / sigma 1.0 (paper, step 4).
SHARPEN = ImageFilter.UnsharpMask(radius=1.0, percent=100, threshold=0)
#: Resampling used to bring the longest edge to 28 px. The paper subsamples (nearest
#: neighbour); BOX averages each source block, which matches subsampling on clean images and
#: is robust to JPEG noise and aliasing in real photos.
RESAMPLE = Image.Resampling.BOX


class ImageError(ValueError):
    """An image file cannot be decoded or converted (the message names the file)."""


@dataclass(frozen=True)
class Prepared:
    """A converted image: ``pixels`` ``uint8[28, 28]`` and whether it passed through."""

    pixels: np.ndarray
    passthrough: bool


def open_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully with Pillow, with EXIF orientation applied.

    Raises:
        ImageError: missing, unreadable, truncated, unsupported, or a decompression bomb.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc}); is it a complete image "
                         "file?") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white, 16-bit and float
    images are scaled (not clipped) to 0-255."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _corner_colour(rgb: np.ndarray) -> np.ndarray:
    corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]]).astype(np.float64)
    return np.median(corners, axis=0)


def trim(rgb: np.ndarray, tolerance: float = TRIM_TOLERANCE) -> np.ndarray:
    """Crop ``uint8[H, W, 3]`` to the box of pixels farther than ``tolerance`` (RMS over RGB)
    from the corner colour (median of the four corners). A uniform image is returned whole."""
    background = _corner_colour(rgb)
    distance = np.sqrt(((rgb.astype(np.float64) - background) ** 2).mean(axis=2))
    rows = np.flatnonzero((distance > tolerance).any(axis=1))
    cols = np.flatnonzero((distance > tolerance).any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return rgb
    return rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def is_fmnist_like(img: Image.Image) -> bool:
    """28x28 with a dark background (corner median below mid-gray): already converted."""
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        return False
    rgb = np.asarray(to_rgb(img))
    return float(_corner_colour(rgb).mean()) < 128


def convert(img: Image.Image) -> Prepared:
    """Run the conversion pipeline on a decoded image.

    Returns:
        :class:`Prepared` with ``uint8[28, 28]`` pixels, dark background, bright object.
    """
    if is_fmnist_like(img):
        return Prepared(np.asarray(to_rgb(img).convert("L"), dtype=np.uint8), True)
    rgb = np.asarray(to_rgb(img))
    background = _corner_colour(rgb)
    cropped = Image.fromarray(trim(rgb))
    w, h = cropped.size
    scale = IMAGE_SIZE / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cropped.resize(size, RESAMPLE).filter(SHARPEN)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE),
                       tuple(int(round(c)) for c in background))
    canvas.paste(small, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    gray = canvas.convert("L")
    # Product photos have light backgrounds: negate so the object is bright on black. A photo
    # that already has a dark background is not negated.
    if background.mean() >= 128:
        gray = ImageOps.invert(gray)
    return Prepared(np.asarray(gray, dtype=np.uint8), False)


def load_image(path: str | Path) -> Prepared:
    """Decode and convert one image file.

    Returns:
        :class:`Prepared` (``pixels``: ``uint8[28, 28]``).

    Raises:
        ImageError: the file cannot be decoded (names the file and the reason).
    """
    return convert(open_image(path))
