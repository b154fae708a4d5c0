"""Render Fashion-MNIST images the way product photos look, for round-trip checks of the
conversion pipeline (:mod:`fmnist_edge.preprocess`).

Each image is inverted to a white background, upscaled (bicubic) to a few hundred pixels,
placed off-centre with margins on a larger white canvas, converted to RGB, JPEG-compressed,
and in some cases stored rotated with an EXIF orientation tag that undoes the rotation.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

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
