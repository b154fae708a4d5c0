"""tf.data input pipeline with on-the-fly, batch-vectorised augmentation.

Images stay raw pixel values 0-255 (``float32[B, 28, 28, 1]``): normalisation is inside the
model. Labels become one-hot ``float32[B, num_classes]`` so label smoothing applies.
"""

from __future__ import annotations

import math

import numpy as np

from fmnist_edge.contract import IMAGE_SIZE
from fmnist_edge.train.config import AugmentConfig
from fmnist_edge.train.keras_shim import tf

_CENTER = (IMAGE_SIZE - 1) / 2.0


def _affine_transforms(batch: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Per-image output->input maps ``[B, 8]`` for ImageProjectiveTransformV3.

    One matrix per image composes flip, rotation, shear, zoom and translation about the image
    centre, so the whole geometric augmentation is one resampling (exact for integer shifts
    and flips).
    """
    b = tf.shape(batch)[0]

    def uniform(limit):
        return tf.random.uniform([b], -limit, limit)

    zeros, ones = tf.zeros([b]), tf.ones([b])
    theta = uniform(math.radians(cfg.rotation_deg)) if cfg.rotation_deg else zeros
    shear = uniform(math.radians(cfg.shear_deg)) if cfg.shear_deg else zeros
    zoom = 1.0 + uniform(cfg.zoom) if cfg.zoom else ones
    flip = (tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0) if cfg.flip else ones)
    if cfg.shift_px:
        shift = tf.random.uniform([b, 2], -cfg.shift_px, cfg.shift_px + 1, dtype=tf.int32)
        tx, ty = tf.cast(shift[:, 0], tf.float32), tf.cast(shift[:, 1], tf.float32)
    else:
        tx, ty = zeros, zeros
    cos, sin = tf.cos(theta), tf.sin(theta)
    # A = R(theta) @ Shear(shear) @ diag(flip * zoom, zoom), mapping output to input offsets.
    a00 = cos * flip * zoom
    a01 = (cos * tf.tan(shear) - sin) * zoom
    a10 = sin * flip * zoom
    a11 = (sin * tf.tan(shear) + cos) * zoom
    c = _CENTER
    a02 = c - a00 * c - a01 * c + tx
    a12 = c - a10 * c - a11 * c + ty
    return tf.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)


def _random_erasing(batch: tf.Tensor, prob: float, area=(0.02, 0.4), aspect=0.3) -> tf.Tensor:
    """Random erasing (Zhong et al. 2017, arXiv:1708.04896, alg. 1), vectorised over a batch."""
    b = tf.shape(batch)[0]
    size = float(IMAGE_SIZE)
    s = tf.random.uniform([b], area[0], area[1]) * size * size
    log_r = tf.random.uniform([b], math.log(aspect), -math.log(aspect))
    r = tf.exp(log_r)
    h = tf.minimum(tf.round(tf.sqrt(s * r)), size)
    w = tf.minimum(tf.round(tf.sqrt(s / r)), size)
    y0 = tf.floor(tf.random.uniform([b]) * (size - h + 1))
    x0 = tf.floor(tf.random.uniform([b]) * (size - w + 1))
    grid = tf.range(size)
    rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    apply = tf.random.uniform([b]) < prob
    mask = rows[:, :, None] & cols[:, None, :] & apply[:, None, None]
    noise = tf.random.uniform(tf.shape(batch), 0.0, 255.0)
    return tf.where(mask[..., None], noise, batch)


#: Appearance randomization: probability of each step for an image that gets it, and ranges.
APPEARANCE_STEPS = {"gamma": 0.8, "gain": 0.5, "texture": 0.4, "invert": 0.15}
GAMMA_RANGE = (0.35, 2.5)     # log-uniform exponent on intensities scaled to 0-1
GAIN_RANGE = (0.7, 2.0)       # intensity gain, clipped at 255 (dark garments saturate)
TEXTURE_RANGE = (0.1, 0.6)    # depth of a multiplicative stripe or noise pattern
INVERT_RANGE = (0.5, 1.0)     # brightness of an object whose tones are inverted
OBJECT_THRESHOLD = 10.0       # pixels above this are the object (background is 0)


def _appearance(batch: tf.Tensor, prob: float) -> tf.Tensor:
    """Randomize the object's tones and texture, not its shape (domain randomization, Tobin
    et al. 2017, arXiv:1703.06907): a photographed garment's grey levels after the
    conversion depend on its colour, pattern and light, which Fashion-MNIST's studio shots
    hardly vary. Each image gets, with probability ``prob``, each step of
    ``APPEARANCE_STEPS`` independently: a gamma curve, a gain, a stripe or noise texture, and
    an inversion of its tones; the background (0) stays 0.

    Args:
        batch: ``float32[B, 28, 28, 1]`` pixels 0-255.
        prob: probability (0-1) that an image is randomized.

    Returns:
        ``float32[B, 28, 28, 1]`` pixels 0-255.
    """
    b = tf.shape(batch)[0]

    def uniform(low, high):
        return tf.random.uniform([b, 1, 1, 1], low, high)

    chosen = tf.cast(tf.random.uniform([b, 1, 1, 1]) < prob, tf.float32)

    def step(name):
        return chosen * tf.cast(tf.random.uniform([b, 1, 1, 1]) < APPEARANCE_STEPS[name],
                                tf.float32)

    mask = tf.cast(batch > OBJECT_THRESHOLD, tf.float32)
    v = batch / 255.0
    gamma = tf.exp(uniform(math.log(GAMMA_RANGE[0]), math.log(GAMMA_RANGE[1])))
    on = step("gamma")
    v = on * tf.pow(v + 1e-6, gamma) + (1 - on) * v
    on = step("gain")
    v = on * tf.clip_by_value(v * uniform(*GAIN_RANGE), 0.0, 1.0) + (1 - on) * v
    grid = tf.range(float(IMAGE_SIZE))
    yy, xx = tf.meshgrid(grid, grid, indexing="ij")
    angle, frequency = uniform(0.0, math.pi), uniform(0.3, 1.6)
    stripes = 0.5 + 0.5 * tf.sin(frequency * (tf.cos(angle) * xx[None, :, :, None]
                                             + tf.sin(angle) * yy[None, :, :, None])
                                 + uniform(0.0, 2 * math.pi))
    noise = tf.random.uniform(tf.shape(batch))
    pattern = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.5, stripes, noise)
    depth = step("texture") * uniform(*TEXTURE_RANGE)
    v = v * (1 - depth * pattern)
    on = step("invert")
    v = on * (mask * (1 - v) * uniform(*INVERT_RANGE)) + (1 - on) * v
    return tf.clip_by_value(v * 255.0 * mask, 0.0, 255.0)


def augment_batch(batch: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Augment ``float32[B, 28, 28, 1]`` pixels (0-255); returns the same shape and range."""
    geometric = cfg.shift_px or cfg.flip or cfg.rotation_deg or cfg.zoom or cfg.shear_deg
    if geometric:
        batch = tf.raw_ops.ImageProjectiveTransformV3(
            images=batch, transforms=_affine_transforms(batch, cfg),
            output_shape=[IMAGE_SIZE, IMAGE_SIZE], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")
    if cfg.erasing_prob:
        batch = _random_erasing(batch, cfg.erasing_prob)
    if cfg.appearance:
        batch = _appearance(batch, cfg.appearance)
    return batch


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int,
                 num_classes: int = 10, training: bool = False,
                 augment: AugmentConfig | None = None, seed: int = 0,
                 photo_pool: tuple[np.ndarray, np.ndarray] | None = None,
                 photo_fraction: float = 0.0) -> tf.data.Dataset:
    """Batched dataset of ``(float32[B, 28, 28, 1] pixels 0-255, float32[B, C] targets)``.

    Args:
        images: ``uint8[N, 28, 28]``.
        labels: integer ``[N]`` in ``[0, num_classes)`` (one-hot encoded here), or
            ``float32[N, C]`` soft targets (e.g. a teacher's probabilities), used as given.
        batch_size: global batch size.
        num_classes: width of the one-hot labels.
        training: cache, shuffle every epoch (seeded) and augment.
        augment: augmentation for training (``None`` or all-off: none).
        seed: shuffle seed.
        photo_pool: ``(uint8[M, 28, 28] converted photos, int[M] indices into images)``
            (:func:`fmnist_edge.train.photo_pool.build_pool`); training only.
        photo_fraction: expected fraction of each batch replaced by the pooled photo of the
            same training image (0-1; capped by the pool's coverage ``M / N``).
    """
    soft = labels.ndim == 2
    targets = labels.astype(np.float32) if soft else labels.astype(np.int32)
    use_pool = training and photo_pool is not None and photo_fraction > 0
    if use_pool:
        pixels, indices = photo_pool
        alternative = images.copy()
        alternative[indices] = pixels
        pooled = np.zeros(len(images), bool)
        pooled[indices] = True
        # Each pooled image is drawn with p = fraction / coverage: the batch share is fraction.
        p_draw = min(1.0, photo_fraction * len(images) / max(1, len(indices)))
        ds = tf.data.Dataset.from_tensor_slices(
            ((images[..., None], alternative[..., None], pooled), targets))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images[..., None], targets))
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    aug = augment if (training and augment is not None and augment.enabled) else None

    def prepare(x, y):
        if use_pool:
            clean, photo, pooled = x
            draw = pooled & (tf.random.uniform(tf.shape(pooled)) < p_draw)
            x = tf.where(draw[:, None, None, None], photo, clean)
        x = tf.cast(x, tf.float32)
        if aug is not None:
            x = augment_batch(x, aug)
        return x, (y if soft else tf.one_hot(y, num_classes))

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
