"""Photo -> ``uint8[28, 28]``: the Fashion-MNIST conversion pipeline.

Real photos first go through a foreground mask (``segment="grabcut"``,
:mod:`fmnist_edge.segment`): the object is kept, its intensities negated, and it is put on
black; the background of a floor, bed or street never reaches the model. Then, as for every
image, the steps of Xiao, Rasul & Vollgraf 2017 (arXiv:1708.07747), section 2, which assume a
product photo on a clean light background (``segment="trim"`` runs them alone):
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

import functools
import io
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from fmnist_edge import segment as segmentation
from fmnist_edge.contract import IMAGE_SIZE

#: Trim tolerance: 5 % of the maximum intensity (paper, step 2), as RMS distance over RGB.
TRIM_TOLERANCE = 0.05 * 255
#: Sharpening: unsharp mask with a Gaussian of radius / sigma 1.0 (paper, step 4).
SHARPEN = ImageFilter.UnsharpMask(radius=1.0, percent=100, threshold=0)
#: Resampling used to bring the longest edge to 28 px. The paper subsamples (nearest
#: neighbour); BOX averages each source block, which matches subsampling on clean images and
#: is robust to JPEG noise and aliasing in real photos.
RESAMPLE = Image.Resampling.BOX
#: Longest edge (pixels) an image is decoded at: the conversion ends at 28x28 and GrabCut
#: works at 96, so larger decodes only cost time and memory (:func:`open_image`).
DECODE_EDGE = 512
#: Largest image (width x height) decoded by default; about 3 bytes per pixel are needed
#: while a PNG decodes (a JPEG is decoded reduced). Pillow warns above 89 Mpx and refuses
#: above 179 Mpx (its decompression-bomb guard, which stays on).
MAX_PIXELS = 100_000_000
#: Foreground methods: GrabCut mask (OpenCV), the paper's trim to the corner colour, or none
#: (the whole frame, negated when light).
SEGMENTS = ("grabcut", "trim", "none")
#: A photo whose border frame (``CLEAN_BORDER_PX`` wide) lies within ``TRIM_TOLERANCE`` of
#: the corner colour for at least this fraction of its pixels has a clean studio background:
#: the paper's trim is exact there and ``grabcut`` uses it (dev set, product shots: 64.7 %
#: top-1 with the trim, 47.1 % with GrabCut; benchmarks/results/realphotos_dev.json).
CLEAN_BORDER = 0.9
CLEAN_BORDER_PX = 3
#: Files up to this size (bytes) are read whole in one call and decoded from memory, and a
#: 28x28 8-bit grayscale PNG among them (a Fashion-MNIST-style image) takes the short path of
#: :func:`load_image` (a 28x28 PNG of the test set is about 0.4-0.8 KiB).
SMALL_FILE_BYTES = 64 * 1024
#: PNG signature and the first chunk type (PNG specification, ISO/IEC 15948, 5.2 and 11.2.2:
#: IHDR holds width and height as big-endian uint32 at bytes 16-24, then bit depth and colour
#: type, 0 meaning grayscale).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: IHDR's width, height, bit depth and colour type of an 8-bit grayscale 28x28 image.
IHDR_GRAY_28 = struct.pack(">IIBB", IMAGE_SIZE, IMAGE_SIZE, 8, 0)


class ImageError(ValueError):
    """An image file cannot be decoded or converted (the message names the file)."""


@dataclass(frozen=True)
class Prepared:
    """A converted image.

    Attributes:
        pixels: ``uint8[28, 28]``, dark background, bright object.
        passthrough: the image already was a 28x28 Fashion-MNIST-style image.
        segment: the method that produced ``pixels`` (one of ``SEGMENTS``, or ``""`` for a
            passthrough).
        fallback: why GrabCut was asked for and not used (no plausible foreground, OpenCV
            missing), else ``None``.
        mask: ``bool[h, w]`` foreground mask at GrabCut's working size, when one was used.
    """

    pixels: np.ndarray
    passthrough: bool
    segment: str = ""
    fallback: str | None = None
    mask: np.ndarray | None = None


def open_image(path: str | Path | BinaryIO, *, max_edge: int | None = DECODE_EDGE,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` with Pillow, with EXIF orientation applied, no larger than needed.

    A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at
    least ``max_edge`` (Pillow's ``draft``); any image still more than twice ``max_edge`` on
    its longest side is then reduced by an integer factor (``Image.reduce``, box average;
    palette and 1-bit images by nearest-neighbour resizing, which keeps them small). A 12 Mpx
    phone JPEG is so decoded at 1/4 and never held at full size in memory.

    Args:
        path: the image file (a regular file: pipes and devices are refused), or an open
            binary stream (e.g. the bytes read from standard input), named by its ``name``.
        max_edge: decode size bound in pixels (``None``: full size).
        max_pixels: images with more pixels (width x height) are refused before decoding
            (``predict --max-pixels``); Pillow's own decompression-bomb guard stays on.

    Raises:
        ImageError: missing, not a regular file, unreadable, truncated, unsupported, larger
            than ``max_pixels``, or a decompression bomb.
    """
    if isinstance(path, (str, Path)):
        source = path = Path(path)
        if path.exists() and not path.is_file():
            raise ImageError(f"{path}: not a regular file (a folder, pipe or device)")
    else:
        source, path = path, getattr(path, "name", "<stream>")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # --max-pixels decides
            with Image.open(source) as img:
                if img.width * img.height > max_pixels:
                    raise ImageError(
                        f"{path}: {img.width}x{img.height} is {img.width * img.height / 1e6:.0f}"
                        f" Mpx, more than --max-pixels {max_pixels:,}; downscale the image or "
                        "raise --max-pixels (decoding needs about 3 bytes per pixel)")
                if max_edge and img.format == "JPEG":
                    img.draft(img.mode, (max_edge, max_edge))
                img.load()
                # Reduce first, then orient (in place: without an orientation to apply,
                # exif_transpose would return a copy).
                factor = max(img.size) // max_edge if max_edge else 1
                if factor >= 2 and img.mode in ("P", "1"):
                    size = (max(1, img.width // factor), max(1, img.height // factor))
                    reduced = img.resize(size, Image.Resampling.NEAREST)
                elif factor >= 2:
                    reduced = img.reduce(factor)
                else:
                    reduced = img
                if reduced is not img:
                    reduced.info, reduced.encoderinfo = img.info, {}
                    if "exif" in img.info or img.getexif():
                        reduced.getexif().update(img.getexif())
                ImageOps.exif_transpose(reduced, in_place=True)
                return reduced
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc}); "
                         "raise --max-pixels only for a file you trust") from exc
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
    """Per-channel median of the four corner pixels, ``float64[3]`` (the mean of the middle
    two: cheaper than ``np.median``, which costs more than the rest of a 28x28 conversion)."""
    corners = np.sort(rgb[[0, 0, -1, -1], [0, -1, 0, -1]].astype(np.float64), axis=0)
    return corners[1:3].mean(axis=0)


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


def clean_background(rgb: np.ndarray) -> bool:
    """Whether ``uint8[H, W, 3]`` has a clean, uniform background: at least ``CLEAN_BORDER``
    of its border frame within ``TRIM_TOLERANCE`` of the corner colour."""
    k = CLEAN_BORDER_PX
    frame = np.concatenate([rgb[:k].reshape(-1, 3), rgb[-k:].reshape(-1, 3),
                            rgb[:, :k].reshape(-1, 3), rgb[:, -k:].reshape(-1, 3)])
    distance = np.sqrt(((frame.astype(np.float32) - _corner_colour(rgb)) ** 2).mean(axis=1))
    return bool((distance <= TRIM_TOLERANCE).mean() >= CLEAN_BORDER)


def _dark_corners(gray: np.ndarray) -> bool:
    """Whether the corner median of ``uint8[H, W]`` is below mid-gray (a dark background).
    Four Python ints: numpy's indexing, sort and mean cost more than the rest of a 28x28
    PNG's conversion on a slow core."""
    c = sorted((int(gray[0, 0]), int(gray[0, -1]), int(gray[-1, 0]), int(gray[-1, -1])))
    return c[1] + c[2] < 256


def _passthrough(img: Image.Image) -> np.ndarray | None:
    """``uint8[28, 28]`` of a 28x28 image with a dark background (corner median below
    mid-gray), an already converted image; else ``None``."""
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        return None
    if img.mode == "L":  # the common case (Fashion-MNIST PNGs): no colour conversion
        gray = np.asarray(img, dtype=np.uint8)
        return gray if _dark_corners(gray) else None
    rgb = to_rgb(img)
    if float(_corner_colour(np.asarray(rgb)).mean()) >= 128:
        return None
    return np.asarray(rgb.convert("L"), dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def default_segment() -> str:
    """``grabcut`` when OpenCV is installed, else ``trim``: the best measured method
    available (benchmarks/results/realphotos_dev.json). Looked up once per process."""
    return "grabcut" if segmentation.available() else "trim"


def _fit(img: Image.Image, fill: int | tuple[int, ...]) -> Image.Image:
    """Longest edge to 28 (``RESAMPLE``), sharpen, centre on a 28x28 canvas of ``fill``."""
    w, h = img.size
    scale = IMAGE_SIZE / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = img.resize(size, RESAMPLE).filter(SHARPEN)
    canvas = Image.new(img.mode, (IMAGE_SIZE, IMAGE_SIZE), fill)
    canvas.paste(small, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    return canvas


def _convert_trim(rgb: np.ndarray, *, crop: bool = True) -> np.ndarray:
    """The paper's steps on ``uint8[H, W, 3]``: trim (if ``crop``), fit, negate when the
    background is light. Returns ``uint8[28, 28]``."""
    background = _corner_colour(rgb)
    cropped = Image.fromarray(trim(rgb) if crop else rgb)
    gray = _fit(cropped, tuple(int(round(c)) for c in background)).convert("L")
    # Product photos have light backgrounds: negate so the object is bright on black. A photo
    # that already has a dark background is not negated.
    if background.mean() >= 128:
        gray = ImageOps.invert(gray)
    return np.asarray(gray, dtype=np.uint8)


def compose_on_black(rgb: np.ndarray, mask: np.ndarray, *, lay_flat: bool = False
                     ) -> np.ndarray:
    """The masked object, negated, on black, cropped to the mask and fitted to 28x28.

    Args:
        rgb: ``uint8[H, W, 3]`` photo.
        mask: ``bool[h, w]`` foreground (any size: the photo is resized to it, area-averaged).
        lay_flat: turn an object taller than wide by 90 degrees counter-clockwise, so that
            it lies on its side as Fashion-MNIST shows shoes (for one shoe of a pair
            photographed from above, toes up: the toe then points left, as in the dataset).

    Returns:
        ``uint8[28, 28]``: 255 minus the luminance (ITU-R 601, Pillow's ``L``) inside the
        mask, 0 outside, as the paper's negation makes a light-background product photo.

    Raises:
        ValueError: an empty mask.
    """
    if not mask.any():
        raise ValueError("compose_on_black needs a non-empty foreground mask")
    h, w = mask.shape
    gray = Image.fromarray(rgb).convert("L")
    if gray.size != (w, h):
        gray = gray.resize((w, h), Image.Resampling.BOX)
    negated = np.where(mask, 255 - np.asarray(gray, dtype=np.uint8), 0).astype(np.uint8)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    crop = negated[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if lay_flat and crop.shape[0] > crop.shape[1]:
        crop = np.ascontiguousarray(np.rot90(crop, 1))
    return np.asarray(_fit(Image.fromarray(crop), 0), dtype=np.uint8)


def convert(img: Image.Image, segment: str | None = None) -> Prepared:
    """Run the conversion pipeline on a decoded image.

    Args:
        img: any Pillow image.
        segment: ``grabcut`` (foreground mask, object composed on black; a photo with a
            clean studio background, :func:`clean_background`, gets the paper's trim
            instead), ``trim`` (the paper's trim to the corner colour) or ``none`` (the whole
            frame); ``None``: :func:`default_segment`. When GrabCut finds no plausible
            foreground the whole frame is negated onto black (``segment`` ``none``), and
            without OpenCV the trim is used; ``fallback`` says why.

    Returns:
        :class:`Prepared` with ``uint8[28, 28]`` pixels, dark background, bright object.

    Raises:
        ValueError: unknown ``segment``.
    """
    segment = default_segment() if segment is None else segment
    if segment not in SEGMENTS:
        raise ValueError(f"segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
    passthrough = _passthrough(img)
    if passthrough is not None:
        return Prepared(passthrough, True)
    rgb = np.asarray(to_rgb(img))
    if segment == "grabcut" and clean_background(rgb):
        return Prepared(_convert_trim(rgb), False, "trim")
    if segment == "grabcut":
        try:
            found = segmentation.foreground_mask(rgb)
        except segmentation.SegmentationUnavailable as exc:
            return Prepared(_convert_trim(rgb), False, "trim", str(exc))
        if found.plausible:
            # A pair photographed apart (shoes): the main one is kept and laid on its side.
            pair = found.components >= 2
            return Prepared(compose_on_black(rgb, found.mask, lay_flat=pair), False,
                            "grabcut", mask=found.mask)
        whole = np.ones(found.mask.shape, dtype=bool)
        return Prepared(compose_on_black(rgb, whole), False, "none", found.reason, whole)
    return Prepared(_convert_trim(rgb, crop=segment == "trim"), False, segment)


PngDecoder = Callable[[bytes], "np.ndarray | None"]


def is_gray_png_28(data: bytes) -> bool:
    """Whether ``data`` is a complete 8-bit grayscale 28x28 PNG: the signature, an IHDR chunk
    with those fields, every chunk's CRC-32 intact, the IEND chunk at the very end, and no
    ``eXIf`` chunk (whose orientation the general path would apply). PNG specification
    (ISO/IEC 15948), 5.2-5.3 and 11.2.2. A damaged or truncated file so fails here, and the
    general path names it, before a decoder would print libpng's complaints."""
    if len(data) < 57 or data[:8] != PNG_SIGNATURE:
        return False
    view, pos = memoryview(data), 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(view[pos + 4:end - 4]) != \
                struct.unpack_from(">I", data, end - 4)[0]:
            return False
        if pos == 8 and (kind != b"IHDR" or data[pos + 8:pos + 18] != IHDR_GRAY_28):
            return False
        if kind == b"eXIf":
            return False
        if kind == b"IEND":
            return end == len(data)
        pos = end
    return False


def decode_png_pillow(data: bytes) -> np.ndarray | None:
    """``uint8[H, W]`` of an 8-bit grayscale PNG held in memory, decoded by Pillow; ``None``
    when it does not decode to mode ``L`` (the caller's general path then reports why)."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as img:
            img.load()
            if img.mode != "L":
                return None
            return np.frombuffer(img.tobytes(), np.uint8).reshape(img.height, img.width)
    except (OSError, SyntaxError, ValueError):  # damaged: the general path names the file
        return None


def decode_png_opencv(data: bytes) -> np.ndarray | None:
    """As :func:`decode_png_pillow`, decoded by OpenCV's ``imdecode`` (libpng): the short
    path took 73.6 us per 28x28 PNG with it and 155.3 us with Pillow, side by side on one
    core (benchmarks/results/predict_breakdown_xeon_amx.json). Requires OpenCV."""
    import cv2

    try:
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # damaged: the general path names the file
        return None
    return gray if gray is not None and gray.ndim == 2 and gray.dtype == np.uint8 else None


def _read_small(path: str | Path) -> bytes | None:
    """The bytes of a regular file of at most :data:`SMALL_FILE_BYTES`; ``None`` for any
    other path (missing, a folder or device, larger, unreadable: the general path reports
    those with its own message)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL_FILE_BYTES:
            return None
        with open(path, "rb") as f:
            return f.read(SMALL_FILE_BYTES + 1)
    except OSError:
        return None


def load_image(path: str | Path | BinaryIO, segment: str | None = None, *,
               max_pixels: int = MAX_PIXELS, png_decoder: PngDecoder | None = None
               ) -> Prepared:
    """Decode (:func:`open_image`) and convert (:func:`convert`) one image file.

    A small file (:data:`SMALL_FILE_BYTES`) is read in one call; when it is a 28x28 8-bit
    grayscale PNG with a dark background (:func:`is_gray_png_28`), its pixels are the result
    (a passthrough, as :func:`convert` would find) without the general path's per-file work
    (185.9 us per image against 73.6 with OpenCV's decoder, side by side on one core:
    benchmarks/results/predict_breakdown_xeon_amx.json). Anything else goes the general path.

    Args:
        path: an image file, or an open binary stream named by its ``name``.
        segment: as :func:`convert`.
        max_pixels: as :func:`open_image`.
        png_decoder: decodes the short path's PNG bytes to ``uint8[28, 28]`` or ``None``
            (:func:`decode_png_opencv`, :func:`decode_png_pillow`); ``None``: Pillow.

    Returns:
        :class:`Prepared` (``pixels``: ``uint8[28, 28]``).

    Raises:
        ImageError: the file cannot be decoded (names the file and the reason).
    """
    if isinstance(path, (str, Path)) and max_pixels >= IMAGE_SIZE * IMAGE_SIZE:
        data = _read_small(path)
        if data is not None and is_gray_png_28(data):
            gray = (png_decoder or decode_png_pillow)(data)
            if gray is not None and gray.shape == (IMAGE_SIZE, IMAGE_SIZE) \
                    and _dark_corners(gray):
                return Prepared(gray, True)
    return convert(open_image(path, max_pixels=max_pixels), segment)
