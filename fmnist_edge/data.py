"""Fashion-MNIST files: read IDX, find them on disk, download and verify them.

The data are the four IDX files of Xiao, Rasul & Vollgraf (2017, arXiv:1708.07747), gzipped
or raw. Every read checks the IDX header (magic number, dimensions, count) and the sha256 of
the decompressed bytes against the canonical release, so nothing trains on unverified data.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_edge.contract import IMAGE_SIZE

log = logging.getLogger(__name__)

ENV_VAR = "FMNIST_EDGE_DATA"


@dataclass(frozen=True)
class IdxFile:
    """One file of the release: its name, expected IDX header and decompressed sha256."""

    name: str
    magic: int  # 0x00000803 images (ubyte, 3 dims), 0x00000801 labels (ubyte, 1 dim)
    shape: tuple[int, ...]
    sha256: str


#: The canonical release (checksums of the *decompressed* bytes: shared/fashion-mnist/README).
FILES: dict[tuple[str, str], IdxFile] = {
    ("train", "images"): IdxFile(
        "train-images-idx3-ubyte", 0x803, (60000, IMAGE_SIZE, IMAGE_SIZE),
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    ("train", "labels"): IdxFile(
        "train-labels-idx1-ubyte", 0x801, (60000,),
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("test", "images"): IdxFile(
        "t10k-images-idx3-ubyte", 0x803, (10000, IMAGE_SIZE, IMAGE_SIZE),
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("test", "labels"): IdxFile(
        "t10k-labels-idx1-ubyte", 0x801, (10000,),
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
SPLITS = ("train", "test")

#: Official mirrors, tried in order (github.com/zalandoresearch/fashion-mnist README, and the
#: mirror keras.datasets.fashion_mnist downloads from).
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)


class DataError(RuntimeError):
    """Fashion-MNIST files are missing, corrupt, truncated or not the canonical release."""


def keras_cache_dir() -> Path:
    """Where ``keras.datasets.fashion_mnist`` keeps the files (``~/.keras/datasets/...``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "fashion-mnist"


def package_cache_dir() -> Path:
    """fmnist-edge's own download cache (``$XDG_CACHE_HOME/fmnist-edge/fashion-mnist``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "fmnist-edge" / "fashion-mnist"


def _file_in(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _needed(splits: tuple[str, ...]) -> list[IdxFile]:
    return [f for (split, _), f in FILES.items() if split in splits]


def _complete(directory: Path, splits: tuple[str, ...] = SPLITS) -> bool:
    return all(_file_in(directory, f.name) for f in _needed(splits))


def candidate_dirs(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, each with how it was chosen."""
    places: list[tuple[str, Path]] = []
    if data_dir is not None:
        places.append(("--data-dir", Path(data_dir).expanduser()))
    if os.environ.get(ENV_VAR):
        places.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser()))
    places.append(("Keras cache", keras_cache_dir()))
    places.append(("fmnist-edge cache", package_cache_dir()))
    return places


def locate(data_dir: str | Path | None = None, *, download: bool = True,
           progress: bool = False, splits: tuple[str, ...] = SPLITS) -> Path:
    """Find the folder holding the files of ``splits`` (default: all four files), downloading
    them if allowed and needed. ``evaluate`` needs only the two ``t10k`` files.

    Order: ``data_dir`` (``--data-dir``), ``$FMNIST_EDGE_DATA``, the Keras cache, the package
    cache. A folder named explicitly (argument or environment variable) must hold the files:
    it is never silently skipped. When nothing is found and ``download`` is true, the files are
    downloaded into the package cache and verified.

    Returns:
        The folder path.

    Raises:
        DataError: the named folder lacks files, or nothing was found and the download failed
            or was not allowed; the message lists the places searched and the fix.
    """
    places = candidate_dirs(data_dir)
    for how, path in places:
        if _complete(path, splits):
            return path
        if how in ("--data-dir", f"${ENV_VAR}"):
            missing = [f.name for f in _needed(splits) if not _file_in(path, f.name)]
            raise DataError(
                f"{how} points at {path}, which lacks {', '.join(missing)} (.gz or raw); "
                "put the four Fashion-MNIST IDX files there or point it elsewhere"
            )
    searched = "; ".join(f"{how}: {path}" for how, path in places)
    if not download:
        raise DataError(f"Fashion-MNIST not found (searched {searched}); "
                        f"pass --data-dir DIR or set ${ENV_VAR}, or allow the download")
    target = package_cache_dir()
    try:
        return download_to(target, progress=progress)
    except DataError as exc:
        raise DataError(
            f"Fashion-MNIST not found (searched {searched}) and the download failed: {exc}. "
            f"Fix: copy the four IDX files (.gz) into a folder and pass --data-dir DIR or set "
            f"${ENV_VAR}=DIR"
        ) from exc


def _progress_bar(total: int | None, description: str):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), transient=True)
    task = progress.add_task(description, total=total)
    return progress, task


def download_to(target: str | Path, *, mirrors: tuple[str, ...] = MIRRORS,
                progress: bool = False, timeout_s: float = 30.0,
                opener: Callable = urllib.request.urlopen) -> Path:
    """Download the four ``.gz`` files into ``target``, verify them, and rename into place.

    Each file is streamed to a temporary file in ``target``, its decompressed content checked
    against the release sha256, and only then renamed to its final name.

    Args:
        target: destination folder (created if needed).
        mirrors: base URLs tried in order.
        progress: show a rich progress bar per file.
        timeout_s: socket timeout per request, in seconds.
        opener: ``urllib.request.urlopen``-compatible callable (tests inject one).

    Raises:
        DataError: every mirror failed for some file (the message gives each failure).
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for spec in FILES.values():
        final = target / f"{spec.name}.gz"
        if final.is_file():
            try:
                _read_verified(final, spec)
                continue
            except DataError:
                log.warning("re-downloading corrupt %s", final)
        errors = []
        for base in mirrors:
            url = f"{base}{spec.name}.gz"
            fd, tmp = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=target)
            tmp_path = Path(tmp)
            try:
                with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout_s) as response:
                    length = response.headers.get("Content-Length") if hasattr(
                        response, "headers") else None
                    if progress:
                        bar, task = _progress_bar(int(length) if length else None, spec.name)
                        with bar:
                            while chunk := response.read(1 << 16):
                                out.write(chunk)
                                bar.advance(task, len(chunk))
                    else:
                        shutil.copyfileobj(response, out, 1 << 16)
                _read_verified(tmp_path, spec, shown_as=url)
                os.replace(tmp_path, final)
                break
            except (OSError, urllib.error.URLError, DataError) as exc:
                errors.append(f"{url}: {exc}")
                tmp_path.unlink(missing_ok=True)
        else:
            raise DataError("; ".join(errors))
    return target


def _decompressed(path: Path, shown_as: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:  # permission denied, a folder, an I/O error
        raise DataError(f"{shown_as}: cannot read ({exc.strerror or exc}); check the file's "
                        "permissions or pass another --data-dir") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{shown_as}: corrupt or truncated gzip ({exc}); "
                            "delete it and download it again") from exc
    return raw


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse an unsigned-byte IDX buffer (LeCun et al.'s MNIST format).

    Layout: 2 zero bytes, type code 0x08 (ubyte), number of dims d, d big-endian uint32 sizes,
    then the data.

    Returns:
        ``uint8`` array of the header's shape.

    Raises:
        DataError: bad magic, unsupported type, or data shorter/longer than the header says.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{source}: IDX type 0x{data[2]:02x} unsupported (expected 0x08 ubyte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4"))
    if ndim == 0 or 0 in shape:
        raise DataError(f"{source}: IDX header declares an empty shape {shape}; the file is "
                        "corrupt")
    expected = math.prod(shape)  # exact integers: a product of uint32s never overflows
    if len(data) - header != expected:
        raise DataError(f"{source}: IDX header promises {shape} = {expected} bytes of data, "
                        f"file holds {len(data) - header}; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_verified(path: Path, spec: IdxFile, *, verify: bool = True,
                   shown_as: str | None = None) -> np.ndarray:
    shown_as = shown_as or str(path)
    data = _decompressed(path, shown_as)
    array = parse_idx(data, source=shown_as)
    magic = int.from_bytes(data[:4], "big")
    if magic != spec.magic or array.shape != spec.shape:
        raise DataError(f"{shown_as}: expected {spec.name} with shape {spec.shape} "
                        f"(magic 0x{spec.magic:08x}), found shape {array.shape} "
                        f"(magic 0x{magic:08x})")
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{shown_as}: sha256 {digest} of the decompressed data is not the "
                            f"canonical release's {spec.sha256}; replace the file")
    return array


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or raw) without checksum verification.

    Returns:
        ``uint8`` array of the header's shape.

    Raises:
        DataError: missing, corrupt or truncated file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return parse_idx(_decompressed(path, str(path)), source=str(path))


def load_split(split: str, data_dir: str | Path | None = None, *, download: bool = True,
               verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST, verified against the canonical release.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        data_dir: folder with the IDX files; otherwise searched as in :func:`locate`.
        download: allow downloading into the package cache when nothing is found.
        verify: check the decompressed sha256 (on by default; off only for known-good data).

    Returns:
        ``(images uint8[N, 28, 28], labels uint8[N])``, read-only arrays.

    Raises:
        ValueError: unknown split.
        DataError: missing, corrupt, truncated or non-canonical files (named in the message).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    folder = locate(data_dir, download=download, splits=(split,))
    arrays = []
    for kind in ("images", "labels"):
        spec = FILES[(split, kind)]
        arrays.append(_read_verified(_file_in(folder, spec.name), spec, verify=verify))
    return arrays[0], arrays[1]


def stratified_split(labels: np.ndarray, holdout: int, *, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified, seeded train/validation split.

    Args:
        labels: ``uint8[N]`` class labels.
        holdout: number of validation samples (0 <= holdout < N), spread over the classes in
            proportion to their frequency.
        seed: RNG seed.

    Returns:
        ``(train_idx int64[N - holdout], val_idx int64[holdout])``, each sorted.
    """
    labels = np.asarray(labels)
    if not 0 <= holdout < len(labels):
        raise ValueError(f"holdout must be in [0, {len(labels)}), got {holdout}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * holdout / len(labels)).astype(int)
    # Hand out the remainder to the classes with the largest fractional parts.
    remainder = holdout - quota.sum()
    frac = counts * holdout / len(labels) - quota
    quota[np.argsort(-frac, kind="stable")[:remainder]] += 1
    val = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx.astype(np.int64)


def train_val_indices(labels: np.ndarray, *, val_size: int, seed: int, train_limit: int = 0,
                      limit_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The one train/validation split of training and export: ``val_size`` images held out
    with :func:`stratified_split` and ``seed``, then, with ``train_limit`` (0: all), a
    stratified subset of that many training images drawn with ``limit_seed`` (default
    ``seed``).

    Args:
        labels: ``uint8[60000]`` training-file labels.

    Returns:
        ``(train_idx int64[T], val_idx int64[val_size])``, sorted.

    Raises:
        ValueError: ``val_size`` out of range.
    """
    train_idx, val_idx = stratified_split(labels, val_size, seed=seed)
    if train_limit and train_limit < len(train_idx):
        _, keep = stratified_split(labels[train_idx], train_limit,
                                   seed=seed if limit_seed is None else limit_seed)
        train_idx = train_idx[keep]
    return train_idx, val_idx


@dataclass(frozen=True)
class Splits:
    """``uint8[N, 28, 28]`` images and ``uint8[N]`` labels of the three splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
