"""The photo-domain pool: training images rendered as phone photos and converted back.

Each pooled image is a training image rendered by :func:`fmnist_edge.photos.render_phone_photo`
(textured surface, uneven light, shadow, pairs of shoes, limbs, blur, noise, JPEG) and then
converted by :func:`fmnist_edge.preprocess.convert` with the default ``grabcut`` method, the
very conversion ``fmnist-edge predict`` runs. The model then learns what a real photo looks
like after conversion (mask edges, lost texture, a neighbouring garment). Segmentation costs
milliseconds per image, so the pool is rendered once, seeded, in worker processes, and cached
on disk (``$XDG_CACHE_HOME/fmnist-edge/photo-pool/<key>.npz``) under a key made of its recipe
and the exact training images.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, photos, preprocess, segment
from fmnist_edge.data import package_cache_dir

#: Bumped whenever the renderer or the conversion changes what a pooled image looks like.
POOL_VERSION = 3
#: Images rendered per worker task (each task has its own seeded generator).
CHUNK = 500


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fmnist-edge/photo-pool`` (beside the data cache)."""
    return package_cache_dir().parent / "photo-pool"


def _render_chunk(args: tuple[np.ndarray, np.ndarray, int, int]) -> np.ndarray:
    images, labels, seed, chunk = args
    rng = np.random.default_rng([seed, chunk])
    out = np.empty((len(images), 28, 28), np.uint8)
    for i, (image, label) in enumerate(zip(images, labels)):
        photo = photos.render_phone_photo(image, int(label), rng)
        out[i] = preprocess.convert(photo, "grabcut").pixels
    return out


def pool_key(images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> str:
    """Cache key: sha256 of the recipe (version, size, seed, segmentation constants) and of
    the training images and labels, 16 hex digits."""
    recipe = {"version": POOL_VERSION, "size": size, "seed": seed,
              "work_size": segment.WORK_SIZE, "border": segment.BORDER,
              "iterations": segment.ITERATIONS}
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:16]


def build_pool(images: np.ndarray, labels: np.ndarray, *, size: int, seed: int = 0,
               workers: int | None = None, cache: Path | None = None,
               log=lambda m: print(m, flush=True)) -> tuple[np.ndarray, np.ndarray]:
    """Render and convert ``size`` training images (or load them from the cache).

    Args:
        images: ``uint8[N, 28, 28]`` training images (never validation or test images).
        labels: ``int[N]`` their classes.
        size: pooled images, at most ``N`` (each image at most once).
        seed: chooses the images and seeds the renderer.
        workers: processes (default: the CPU count).
        cache: cache folder (default :func:`cache_dir`); the file is written atomically.
        log: progress messages.

    Returns:
        ``(uint8[size, 28, 28] converted photos, int64[size] indices into images)``.

    Raises:
        ValueError: ``size`` out of range.
        fmnist_edge.segment.SegmentationUnavailable: OpenCV missing.
    """
    if not 1 <= size <= len(images):
        raise ValueError(f"photo pool size must be in 1..{len(images)}, got {size}")
    cache = cache_dir() if cache is None else Path(cache)
    path = cache / f"{pool_key(images, labels, size, seed)}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["pixels"], stored["indices"]
    if not segment.available():
        raise segment.SegmentationUnavailable(
            "the photo pool is converted with GrabCut, which needs OpenCV: pip install "
            "opencv-python-headless")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(images), size=size, replace=False))
    tasks = [(images[indices[s:s + CHUNK]], labels[indices[s:s + CHUNK]], seed, k)
             for k, s in enumerate(range(0, size, CHUNK))]
    workers = workers or os.cpu_count() or 1
    log(f"rendering a photo pool of {size} images with {workers} workers into {path}")
    parts: list[np.ndarray] = []
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        for k, part in enumerate(pool.map(_render_chunk, tasks)):
            parts.append(part)
            if (k + 1) % 10 == 0 or k + 1 == len(tasks):
                log(f"  photo pool: {min(size, (k + 1) * CHUNK)}/{size}")
    pixels = np.concatenate(parts)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, pixels=pixels, indices=indices)
    return pixels, indices
