"""The Fashion-MNIST conversion pipeline on real test images rendered as photos, and on
every odd image mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fmnist_edge import photos, preprocess
from fmnist_edge.preprocess import ImageError


@pytest.fixture(scope="module")
def sample(test_split):
    images, labels = test_split
    return images[:40], labels[:40]


@pytest.fixture(scope="module")
def product(sample):
    """One real test image as an upright white-background photo (PIL RGB)."""
    rng = np.random.default_rng(5)
    return Image.open(io.BytesIO(photos.render_photo(sample[0][0], rng))).convert("RGB")


def _similar(a: np.ndarray, b: np.ndarray, tol: float = 6.0) -> bool:
    return float(np.abs(a.astype(int) - b.astype(int)).mean()) < tol


def test_fmnist_image_passes_through_untouched(sample):
    image = sample[0][3]
    out = preprocess.convert(Image.fromarray(image))
    assert out.passthrough
    np.testing.assert_array_equal(out.pixels, image)


def test_product_photos_are_converted_back(sample):
    rng = np.random.default_rng(11)
    correlations = []
    for image in sample[0]:
        photo = Image.open(io.BytesIO(photos.render_photo(image, rng)))
        out = preprocess.convert(photo)
        assert not out.passthrough
        assert out.pixels.shape == (28, 28) and out.pixels.dtype == np.uint8
        # Dark background, bright object, as in Fashion-MNIST.
        assert out.pixels[[0, 0, -1, -1], [0, -1, 0, -1]].max() < 40
        correlations.append(np.corrcoef(out.pixels.ravel().astype(float),
                                        image.ravel().astype(float))[0, 1])
    # Close to the original 28x28 images (trimming re-frames objects that had margins).
    assert np.median(correlations) > 0.85 and min(correlations) > 0.4


def test_longest_edge_is_28_and_centred():
    canvas = Image.new("RGB", (400, 300), "white")
    canvas.paste(Image.new("RGB", (200, 100), (20, 20, 20)), (150, 60))  # off-centre block
    out = preprocess.convert(canvas).pixels
    rows = np.flatnonzero(out.max(axis=1) > 128)
    cols = np.flatnonzero(out.max(axis=0) > 128)
    assert cols[0] == 0 and cols[-1] == 27  # longest edge spans 28 px
    assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 1  # centred vertically
    assert 12 <= len(rows) <= 16  # aspect 2:1 kept


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "CMYK", "L", "1"])
def test_odd_modes_match_rgb(product, mode):
    base = preprocess.convert(product).pixels
    if mode == "RGBA":
        # Transparent background (alpha 0, garbage colour) composited on white.
        rgba = product.convert("RGBA")
        arr = np.asarray(rgba).copy()
        white = (arr[..., :3] > 250).all(axis=2)
        arr[white] = (255, 0, 0, 0)
        img = Image.fromarray(arr, "RGBA")
    elif mode == "LA":
        img = product.convert("LA")
    elif mode == "I;16":
        gray = np.asarray(product.convert("L")).astype(np.uint16) * 257
        img = Image.fromarray(gray)
        assert img.mode == "I;16"
    elif mode == "1":
        img = product.convert("1")
        base = preprocess.convert(img.convert("L")).pixels
    elif mode == "P":
        img = product.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    else:
        img = product.convert(mode)
    out = preprocess.convert(img).pixels
    assert out.shape == (28, 28)
    assert _similar(out, base, tol=8.0 if mode in ("P", "CMYK") else 3.0), mode


@pytest.mark.parametrize("tag", [3, 6, 8])
def test_exif_orientation_is_applied(product, tmp_path, tag):
    rotated = product.transpose(photos._ROTATIONS[tag])
    exif = Image.Exif()
    exif[0x0112] = tag
    path = tmp_path / f"rot{tag}.jpg"
    rotated.save(path, "JPEG", quality=95, exif=exif.tobytes())
    upright = tmp_path / "upright.jpg"
    product.save(upright, "JPEG", quality=95)
    assert _similar(preprocess.load_image(path).pixels, preprocess.load_image(upright).pixels)


def test_corrupt_and_truncated_files_name_the_file(product, tmp_path):
    buf = io.BytesIO()
    product.save(buf, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[:400])
    with pytest.raises(ImageError, match="truncated.jpg"):
        preprocess.load_image(truncated)
    garbage = tmp_path / "notes.png"
    garbage.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png.*cannot decode"):
        preprocess.load_image(garbage)
    with pytest.raises(ImageError, match="no such file"):
        preprocess.load_image(tmp_path / "missing.png")


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (200, 200), 255).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 px > 2x the limit
    with pytest.raises(ImageError, match="decompression bomb"):
        preprocess.load_image(path)


def test_large_photos_are_decoded_reduced(product, tmp_path):
    """A 14 Mpx JPEG is decoded at a DCT scale (draft), a large PNG reduced: both end with
    the longest edge within [DECODE_EDGE, 2 * DECODE_EDGE), and convert as the small one."""
    big = product.resize((product.width * 8, product.height * 8), Image.Resampling.BICUBIC)
    for name in ("big.jpg", "big.png"):
        big.save(tmp_path / name)
        img = preprocess.open_image(tmp_path / name)
        assert preprocess.DECODE_EDGE <= max(img.size) < 2 * preprocess.DECODE_EDGE
        assert abs(img.size[0] / img.size[1] - product.width / product.height) < 0.01
        small = preprocess.convert(product, "trim").pixels
        assert _similar(preprocess.convert(img, "trim").pixels, small, tol=12)
    full = preprocess.open_image(tmp_path / "big.jpg", max_edge=None)
    assert full.size == big.size


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_survives_reduced_decoding(tmp_path, suffix):
    stored = Image.new("RGB", (4000, 1500), "white")  # stored sideways, tag 6 turns it upright
    stored.paste(Image.new("RGB", (500, 1500), (0, 0, 0)), (0, 0))  # dark band on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"sideways{suffix}"
    stored.save(path, exif=exif.tobytes())
    img = preprocess.open_image(path)
    assert img.height > img.width  # upright: portrait
    assert max(img.size) < 2 * preprocess.DECODE_EDGE
    top = np.asarray(img.convert("L"))[: img.height // 10]
    assert top.mean() < 60  # rotating 90 degrees clockwise put the dark band on top


def _general(path) -> preprocess.Prepared:
    """The general path alone: Pillow's decode, then the conversion."""
    return preprocess.convert(preprocess.open_image(path))


@pytest.mark.parametrize("decoder", [None, preprocess.decode_png_pillow,
                                     preprocess.decode_png_opencv])
def test_short_path_for_28x28_pngs_matches_the_general_path(test_split, tmp_path, decoder,
                                                            monkeypatch):
    """Real test images saved as PNGs take the short path with either decoder and come out
    exactly as the general path makes them; every other small file is left to it."""
    images = test_split[0][:200]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    opened = []
    real_open = preprocess.open_image
    monkeypatch.setattr(preprocess, "open_image",
                        lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    for i, image in enumerate(images):
        out = preprocess.load_image(tmp_path / f"{i}.png", png_decoder=decoder)
        assert out.passthrough and out.segment == ""
        np.testing.assert_array_equal(out.pixels, image)
    assert opened == []  # none went the general path
    # A light background, colour, 16 bits, another size, an EXIF orientation: general path.
    light = 255 - images[0]
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down
    variants = {"light.png": (Image.fromarray(light), {}),
                "rgb.png": (Image.fromarray(images[1]).convert("RGB"), {}),
                "deep.png": (Image.fromarray(images[2].astype(np.uint16) * 257), {}),
                "wide.png": (Image.fromarray(np.zeros((28, 30), np.uint8)), {}),
                "turned.png": (Image.fromarray(images[3]), {"exif": exif.tobytes()})}
    for name, (img, kwargs) in variants.items():
        img.save(tmp_path / name, **kwargs)
        opened.clear()
        out = preprocess.load_image(tmp_path / name, png_decoder=decoder)
        assert len(opened) == 1, name
        expected = _general(tmp_path / name)
        np.testing.assert_array_equal(out.pixels, expected.pixels)
        assert out.passthrough == expected.passthrough
    np.testing.assert_array_equal(preprocess.load_image(tmp_path / "turned.png").pixels,
                                  images[3][::-1, ::-1])


@pytest.mark.parametrize("decoder", [preprocess.decode_png_pillow,
                                     preprocess.decode_png_opencv])
def test_damaged_28x28_pngs_name_the_file_and_print_nothing(test_split, tmp_path, decoder,
                                                           capfd):
    """A truncated file and flipped bytes anywhere in a 28x28 PNG: the file check sends them
    to the general path, which names the file; no decoder prints to stderr."""
    buf = io.BytesIO()
    Image.fromarray(test_split[0][0]).save(buf, "PNG")
    data = buf.getvalue()
    damaged = {"cut.png": data[: len(data) // 2]}
    for pos in (20, 40, 60, len(data) // 2, len(data) - 14):
        flipped = bytearray(data)
        flipped[pos] ^= 0x55
        damaged[f"flip{pos}.png"] = bytes(flipped)
    for name, content in damaged.items():
        assert not preprocess.is_gray_png_28(content), name
        (tmp_path / name).write_bytes(content)
        try:
            preprocess.load_image(tmp_path / name, png_decoder=decoder)
        except ImageError as exc:
            assert name in str(exc)
    # Pillow decodes some flipped bytes without noticing (in a chunk it ignores); it never
    # raises anything but ImageError, and nothing reaches stderr.
    assert capfd.readouterr().err == ""


def test_short_path_keeps_max_pixels(test_split, tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(test_split[0][0]).save(path)
    with pytest.raises(ImageError, match="max-pixels 100"):
        preprocess.load_image(path, max_pixels=100)
