"""Classify image files: expand paths, convert each photo, run the model once."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist_edge import segment as segmentation
from fmnist_edge.contract import LABELS, softmax, top_classes
from fmnist_edge.preprocess import (
    MAX_PIXELS,
    SEGMENTS,
    ImageError,
    PngDecoder,
    Prepared,
    decode_png_opencv,
    load_image,
)
from fmnist_edge.provenance import installed
from fmnist_edge.runtime import Runtime, usable_cores

#: Suffixes picked up when a directory is given (Pillow decodes these).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm"}
MODELS_DIR = Path(__file__).parent / "models"
#: What a bare install (no runtime extra) says when asked to run a model.
NO_RUNTIME = ('no inference runtime is installed: pip install "fmnist-edge[litert]" (LiteRT, '
              '.tflite) or "fmnist-edge[onnx]" (onnxruntime, .onnx)')
#: Files converted (on all cores) and classified per model call: bounds the memory of a
#: large folder while keeping batches large enough for the runtimes.
CHUNK = 64
#: Inference threads of ``predict`` unless ``--threads`` is given. Files are converted on
#: every core while the model classifies (:func:`predict_paths`), so a second inference
#: thread competes with conversion: on two cores it classified 1.16x as many 28x28 PNGs
#: (cheap to convert) but no more photos (0.98x: GrabCut), taking turns in one run
#: (benchmarks/results/predict_throughput_xeon_amx.json); on one core it cost 8 %. Under a
#: busy core onnxruntime's second thread cost a third of its batch-64 throughput on the Xeon
#: and 28 % of its batch-1 throughput on an AVX-512 VNNI EPYC (threads_under_load_<cpu>.json).
PREDICT_THREADS = 1
#: From this many files on, ``predict`` decodes 28x28 grayscale PNGs with OpenCV (when
#: installed) rather than Pillow: importing OpenCV (25-50 ms here) costs more than its faster
#: decoding saves on fewer files (:func:`fmnist_edge.preprocess.decode_png_opencv`).
OPENCV_DECODE_FILES = 1000


@dataclass(frozen=True)
class Prediction:
    """One classified image: ``top_k`` as ``(class index, label, probability)``; ``segment``
    the conversion used (``grabcut``, ``trim``, ``none``; ``""`` for a passthrough) and
    ``fallback`` why GrabCut was asked for and not used (else ``None``)."""

    path: str
    top_k: list[tuple[int, str, float]]
    passthrough: bool
    ok: bool = True
    segment: str = ""
    fallback: str | None = None
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)
    save_error: str | None = None


@dataclass(frozen=True)
class Failure:
    """One image that could not be classified, with the reason."""

    path: str
    error: str
    ok: bool = False
    top_k: list = field(default_factory=list)


def _litert_installed() -> bool:
    return installed("ai_edge_litert") or installed("tflite_runtime")


def default_model(threads: int = PREDICT_THREADS) -> Path:
    """The model shipped inside the package, for the runtime that is installed: the int8
    TFLite with a TFLite interpreter (LiteRT), the int8 ONNX with onnxruntime. With both,
    the one that runs faster on this machine with ``threads`` inference threads, measured
    once and cached (:func:`fmnist_edge.runtime.choice.fastest`): neither is faster on every
    CPU.

    Raises:
        ImportError: no inference runtime is installed (names the extras).
        FileNotFoundError: the package ships no model (a broken install).
    """
    onnx_path = MODELS_DIR / "default_int8.onnx"
    tflite_path = MODELS_DIR / "default_int8.tflite"
    usable = [path for path, ok in ((tflite_path, _litert_installed()),
                                    (onnx_path, installed("onnxruntime")))
              if ok and path.is_file()]
    if len(usable) == 2:
        from fmnist_edge.runtime.choice import fastest

        return fastest(usable, threads=threads)
    if usable:
        return usable[0]
    if not _litert_installed() and not installed("onnxruntime"):
        raise ImportError(NO_RUNTIME)
    raise FileNotFoundError(f"no default model in {MODELS_DIR}; reinstall fmnist-edge or "
                            "pass --model")


#: Names of the shipped models, accepted wherever a model path is.
SHIPPED = {"default-tflite": "default_int8.tflite", "default-onnx": "default_int8.onnx"}


def resolve_model(text: str | Path, threads: int = PREDICT_THREADS) -> Path:
    """A model argument -> a model file; where both runtimes could run it, the faster here
    with ``threads`` inference threads.

    Accepts ``default`` (the shipped model for the installed runtime, :func:`default_model`),
    ``default-tflite`` / ``default-onnx``, an export folder (its ``manifest.json`` names the
    artifacts: the int8 one for the installed runtime, the faster here when both are), a
    run folder (the artifact of its ``export/`` when it was exported, else its
    ``model.keras``), or a model file.

    Raises:
        fmnist_edge.runs.RunError: nothing usable at that path.
        FileNotFoundError: the package ships no model.
    """
    from fmnist_edge import runs

    name = str(text)
    if name == "default":
        return default_model(threads)
    if name in SHIPPED:
        path = MODELS_DIR / SHIPPED[name]
        if not path.is_file():
            raise FileNotFoundError(f"{name}: not shipped in {MODELS_DIR}; reinstall")
        return path
    path = Path(text)
    if path.is_dir() and runs.Run(path).export.manifest.is_file():
        path = runs.Run(path).export.root  # an exported run: the artifact its manifest names
    manifest = runs.ExportFolder(path).manifest
    if path.is_dir() and manifest.is_file():
        artifacts = runs.read_json(manifest, {}).get("artifacts", {})
        present = {fmt: path / a["file"] for fmt, a in artifacts.items()
                   if (path / a["file"]).is_file()}
        int8 = [present[fmt] for fmt, ok in (("tflite-int8", _litert_installed()),
                                             ("onnx-int8", installed("onnxruntime")))
                if ok and fmt in present]
        if len(int8) == 2:  # both runtimes: the faster here, as for the shipped model
            from fmnist_edge.runtime.choice import fastest

            return fastest(int8, threads=threads)
        if int8:
            return int8[0]
        fallback = sorted(present, key=lambda fmt: not fmt.endswith("-int8"))
        if fallback:  # the runtime it needs is missing: loading it says which to install
            return present[fallback[0]]
        raise runs.RunError(f"{path}: its manifest.json names no artifact present in the folder")
    return runs.resolve_model(path)


def load_model(model: str | Path | None = None, *, threads: int | None = None,
               verify: bool = True) -> Runtime:
    """The runtime ``predict`` classifies with.

    Args:
        model: as :func:`resolve_model`; ``None``: :func:`default_model`.
        threads: inference threads; ``None``: :data:`PREDICT_THREADS`.
        verify: check the file's sha256 against its card.

    Raises:
        as :func:`resolve_model` and :func:`fmnist_edge.runtime.load`.
    """
    from fmnist_edge.runtime import load

    threads = PREDICT_THREADS if threads is None else threads
    path = resolve_model(model, threads) if model is not None else default_model(threads)
    return load(path, num_threads=threads, verify=verify)


def image_files(folder: Path) -> list[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`, any case) under ``folder``, recursively, in
    path order (sorted by path components, as ``sorted(Path.rglob(...))``).

    The walk reads each directory with ``os.scandir``, whose entries know their type without
    a ``stat`` per file, and sorts strings split on the separator rather than comparing
    ``Path`` objects: about a third of the time of ``sorted(folder.rglob("*"))`` with an
    ``is_file()`` per path. Like ``rglob``, it does not descend into symlinked directories
    (no cycles) and skips directories it may not read."""
    found: list[str] = []
    pending = [str(folder)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif (os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                          and entry.is_file()):
                        found.append(entry.path)
        except OSError:  # unreadable (permissions) or removed meanwhile, as rglob
            continue
    return [Path(name) for name in sorted(found, key=lambda name: name.split(os.sep))]


def expand_paths(items: list[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Files as given, directories walked recursively for image files, globs expanded.

    Returns:
        ``(files, failures)``; a name matching nothing is a failure, not an exception.
    """
    files: list[Path] = []
    failures: list[Failure] = []
    for item in map(str, items):
        path = Path(item)
        if path.is_dir():
            found = image_files(path)
            if not found:
                failures.append(Failure(item, "directory holds no image files"))
            files += found
        elif path.exists():
            if path.is_file():
                files.append(path)
            else:  # a FIFO, socket or device would block or never end
                failures.append(Failure(item, "not a regular file (a pipe, socket or device); "
                                              "give an image file"))
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True)
                             if Path(p).is_file())
            if not matches:
                failures.append(Failure(item, "pattern matches no files"))
            files += matches
        else:
            failures.append(Failure(item, "no such file or directory"))
    return files, failures


def png_decoder(files: int) -> PngDecoder | None:
    """The decoder of 28x28 grayscale PNGs for ``files`` files: OpenCV's when it is
    installed and either already imported or ``files`` >= :data:`OPENCV_DECODE_FILES`, else
    ``None`` (Pillow's, :func:`fmnist_edge.preprocess.load_image`)."""
    if segmentation.available() and ("cv2" in sys.modules or files >= OPENCV_DECODE_FILES):
        return decode_png_opencv
    return None


def _save_seen(out: Path, path: Path, prepared: Prepared, used: set[str]) -> None:
    """Write ``<stem>.png`` (the 28x28 the model saw) and, when a foreground mask was used,
    ``<stem>.mask.png`` into ``out``; a stem already written in this call gets ``-2``,
    ``-3``, ... so two inputs never overwrite each other."""
    from fmnist_edge import atomic

    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_with(out / f"{stem}.png",
                      lambda tmp: Image.fromarray(prepared.pixels).save(tmp, "PNG"))
    if prepared.mask is not None:
        mask = (prepared.mask.astype(np.uint8) * 255)
        atomic.write_with(out / f"{stem}.mask.png",
                          lambda tmp: Image.fromarray(mask).save(tmp, "PNG"))


def predict_paths(items: list[str | Path], runtime: Runtime, *, top_k: int = 1,
                  save_preprocessed: str | Path | None = None, segment: str | None = None,
                  keep_pixels: bool = False, max_pixels: int | None = None
                  ) -> list[Prediction | Failure]:
    """Classify every image found in ``items``; broken files become :class:`Failure` rows.

    Args:
        items: files, directories and glob patterns; ``-`` is one image read from standard
            input (reported as path ``-``).
        runtime: a loaded model (:func:`fmnist_edge.runtime.load`).
        top_k: classes reported per image (1-10).
        save_preprocessed: folder to write the ``uint8[28, 28]`` images the model saw
            (``<stem>.png``) and the foreground masks (``<stem>.mask.png``).
        segment: foreground method, see :func:`fmnist_edge.preprocess.convert` (``None``:
            the default, GrabCut when OpenCV is installed).
        keep_pixels: keep each image's ``uint8[28, 28]`` in ``Prediction.pixels``.
        max_pixels: larger images (width x height) are refused (a :class:`Failure`), see
            :func:`fmnist_edge.preprocess.open_image` (``None``: ``MAX_PIXELS``).

    Returns:
        One row per file (in order) plus one per unmatched item. When the preprocessed
        images cannot be written (full disk, read-only folder, a file in the way), every
        prediction is still returned and carries ``save_error``.

    Raises:
        ValueError: ``top_k`` out of range or an unknown ``segment``.
    """
    if not 1 <= top_k <= len(LABELS):
        raise ValueError(f"top_k must be in 1..{len(LABELS)}, got {top_k}")
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {max_pixels}")
    if segment is not None and segment not in SEGMENTS:
        raise ValueError(f"--segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
    stdin = [i for i in items if str(i) == "-"]
    files, failures = expand_paths([i for i in items if str(i) != "-"])
    if stdin:
        files.insert(0, Path("-"))
    rows: list[Prediction | Failure] = []
    used: set[str] = set()
    save_error: str | None = None
    decoder = png_decoder(len(files))

    def convert_one(path: Path) -> Prepared | ImageError:
        try:
            if str(path) == "-":  # one image from standard input
                stream = io.BytesIO(sys.stdin.buffer.read())
                stream.name = "<stdin>"
                return load_image(stream, segment, max_pixels=max_pixels)
            return load_image(path, segment, max_pixels=max_pixels, png_decoder=decoder)
        except ImageError as exc:
            return exc

    def convert_many(paths: list[Path]) -> list[Prepared | ImageError]:
        return [convert_one(path) for path in paths]

    # Decoding (Pillow) and segmentation (OpenCV) release the GIL. Each chunk of files is
    # converted in one task per core while the model classifies the chunk before it, so
    # conversion and inference overlap; memory stays bounded by two chunks.
    workers = max(1, min(len(files), usable_cores()))
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:

        def submit(chunk: list[Path]) -> list[concurrent.futures.Future]:
            step = -(-len(chunk) // workers)
            return [pool.submit(convert_many, chunk[i:i + step])
                    for i in range(0, len(chunk), step)]

        pending = submit(chunks[0]) if chunks else []
        for k, chunk in enumerate(chunks):
            converted = [c for future in pending for c in future.result()]
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            ready = [c.pixels for c in converted if not isinstance(c, ImageError)]
            probs = iter(softmax(runtime.logits(np.stack(ready))) if ready else ())
            for path, prepared in zip(chunk, converted):
                if isinstance(prepared, ImageError):
                    rows.append(Failure(str(path), str(prepared)))
                    continue
                p = next(probs)
                order = top_classes(p, top_k)
                row = Prediction(
                    str(path), [(int(i), LABELS[i], float(p[i])) for i in order],
                    prepared.passthrough, segment=prepared.segment, fallback=prepared.fallback,
                    pixels=prepared.pixels if keep_pixels else None)
                if save_preprocessed is not None and save_error is None:
                    try:
                        _save_seen(Path(save_preprocessed), path, prepared, used)
                    except OSError as exc:  # full disk, read-only, a file in the way
                        save_error = (f"--save-preprocessed {save_preprocessed}: cannot write "
                                      f"{exc.filename or ''} ({exc.strerror or exc}); choose a "
                                      "writable folder")
                if save_error is not None:
                    row = dataclasses.replace(row, save_error=save_error)
                rows.append(row)
    return rows + failures


def to_csv(rows: list[Prediction | Failure]) -> str:
    """CSV text: ``path, ok, label, index, probability, top_k, segment, fallback, error``;
    ``top_k`` is ``label:probability`` pairs joined by ``;``."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "ok", "label", "index", "probability", "top_k", "segment",
                     "fallback", "error"])
    for r in rows:
        if isinstance(r, Prediction):
            index, label, prob = r.top_k[0]
            top = ";".join(f"{lab}:{p:.6f}" for _, lab, p in r.top_k)
            writer.writerow([r.path, True, label, index, f"{prob:.6f}", top, r.segment,
                             r.fallback or "", r.save_error or ""])
        else:
            writer.writerow([r.path, False, "", "", "", "", "", "", r.error])
    return buf.getvalue()


def to_json(rows: list[Prediction | Failure], model: Path) -> dict:
    """JSON-ready output: ``{"model", "results": [{"path", "ok", "passthrough", "segment",
    "fallback", "top_k"} | {"path", "ok", "error"}]}``."""
    results = []
    for r in rows:
        if isinstance(r, Prediction):
            row = {"path": r.path, "ok": True, "passthrough": r.passthrough,
                   "segment": r.segment, "fallback": r.fallback,
                   "top_k": [{"index": i, "label": label, "probability": p}
                             for i, label, p in r.top_k]}
            if r.save_error:
                row["save_error"] = r.save_error
            results.append(row)
        else:
            results.append({"path": r.path, "ok": False, "error": r.error})
    return {"model": str(model), "results": results}
