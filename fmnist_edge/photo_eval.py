"""Accuracy on a folder of labelled real photos, through ``predict``'s own pipeline.

Labels come from ``manifest.tsv`` in the folder when it has one (columns ``local_path``,
``class_index`` and optionally ``kind``: the layout of the real-photo development set), else
from folder names ``<index>_<label>`` (e.g. ``5_Sandal/shoe.jpg``; kind ``all``).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fmnist_edge.contract import LABELS, NUM_CLASSES
from fmnist_edge.metrics import confusion_matrix
from fmnist_edge.predict import Prediction, image_files, predict_paths
from fmnist_edge.runtime import Runtime

MANIFEST = "manifest.tsv"
_CLASS_DIR = re.compile(r"^(\d+)_")


class PhotoSetError(ValueError):
    """A photo folder without usable labels (the message names the folder and the fix)."""


@dataclass(frozen=True)
class LabelledPhoto:
    """One photo: its file, true class index (0-9) and kind (e.g. ``flatlay``)."""

    path: Path
    label: int
    kind: str


def read_photo_set(folder: str | Path) -> list[LabelledPhoto]:
    """The labelled photos of ``folder``: from ``manifest.tsv``, else ``<index>_<label>/``
    sub-folders (searched recursively, kind ``all``).

    Raises:
        PhotoSetError: not a folder, a malformed manifest, or no labelled photo found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoSetError(f"{folder}: not a folder; --photos takes a folder of labelled "
                            f"photos ({MANIFEST}, or sub-folders named <index>_<label>)")
    manifest = folder / MANIFEST
    photos: list[LabelledPhoto] = []
    if manifest.is_file():
        with manifest.open(newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = {"local_path", "class_index"} - set(reader.fieldnames or ())
            if missing:
                raise PhotoSetError(f"{manifest}: missing column(s) {sorted(missing)}; "
                                    "it needs local_path and class_index (kind optional)")
            for n, row in enumerate(reader, start=2):
                try:
                    label = int(row["class_index"])
                except (TypeError, ValueError):
                    label = -1
                if not 0 <= label < NUM_CLASSES:
                    raise PhotoSetError(f"{manifest}, line {n}: class_index must be 0-9, "
                                        f"got {row['class_index']!r}")
                photos.append(LabelledPhoto(folder / row["local_path"], label,
                                            row.get("kind") or "all"))
    else:
        for path in image_files(folder):
            match = _CLASS_DIR.match(path.parent.name)
            if match and int(match.group(1)) < NUM_CLASSES:
                photos.append(LabelledPhoto(path, int(match.group(1)), "all"))
    if not photos:
        raise PhotoSetError(f"{folder}: no labelled photos; add a {MANIFEST} (local_path, "
                            "class_index, kind) or put photos in sub-folders named "
                            "<index>_<label>, e.g. 5_Sandal/")
    return photos


def _accuracy_table(pairs: list[tuple[str, bool]]) -> dict[str, dict[str, float | int]]:
    hits: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for key, ok in pairs:
        total[key] += 1
        hits[key] += int(ok)
    return {k: {"correct": hits[k], "photos": total[k], "top1_accuracy": hits[k] / total[k]}
            for k in sorted(total)}


def evaluate_photos(folder: str | Path, runtime: Runtime, *, segment: str | None = None,
                    montage: str | Path | None = None) -> dict[str, Any]:
    """Top-1 of ``predict``'s pipeline on the labelled photos of ``folder``.

    Args:
        folder: see :func:`read_photo_set`.
        runtime: the model.
        segment: foreground method (see :func:`fmnist_edge.preprocess.convert`).
        montage: write a PNG montage here (photo, the 28x28 the model saw, prediction; green
            frame correct, red wrong).

    Returns:
        JSON-ready ``{"photos", "top1_accuracy", "per_kind", "per_class", "confusion_matrix",
        "fallbacks", "failed"}``; accuracies are fractions 0-1, the confusion matrix counts
        (rows true, columns predicted) over the photos that decoded.

    Raises:
        PhotoSetError: see :func:`read_photo_set`.
    """
    photos = read_photo_set(folder)
    rows = predict_paths([p.path for p in photos], runtime, segment=segment,
                         keep_pixels=montage is not None)
    by_path = {r.path: r for r in rows}
    predicted = np.array([by_path[str(p.path)].top_k[0][0]
                          if isinstance(by_path.get(str(p.path)), Prediction) else -1
                          for p in photos])
    labels = np.array([p.label for p in photos])
    ok = predicted == labels
    decoded = predicted >= 0
    report = {
        "folder": str(folder),
        "photos": len(photos),
        "top1_accuracy": float(ok.mean()),
        "per_kind": _accuracy_table([(p.kind, bool(o)) for p, o in zip(photos, ok)]),
        "per_class": _accuracy_table([(f"{p.label} {LABELS[p.label]}", bool(o))
                                      for p, o in zip(photos, ok)]),
        "confusion_matrix": confusion_matrix(labels[decoded], predicted[decoded]).tolist(),
        "fallbacks": sum(1 for r in rows if isinstance(r, Prediction) and r.fallback),
        "failed": [{"path": r.path, "error": r.error} for r in rows if not r.ok],
    }
    if montage is not None:
        write_montage(photos, [by_path.get(str(p.path)) for p in photos], montage)
    return report


def write_montage(photos: list[LabelledPhoto], rows: list, path: str | Path, *,
                  columns: int = 6, thumb: int = 96) -> Path:
    """A PNG grid: per photo its thumbnail, the 28x28 the model saw (upscaled), the
    prediction and the truth; green frame when correct, red when wrong. Written atomically.
    """
    from fmnist_edge import atomic
    from fmnist_edge.preprocess import ImageError, open_image, to_rgb

    cell_w, cell_h = 2 * thumb + 12, thumb + 30
    n = len(photos)
    sheet = Image.new("RGB", (columns * cell_w, max(1, -(-n // columns)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (photo, row) in enumerate(zip(photos, rows)):
        x, y = (k % columns) * cell_w, (k // columns) * cell_h
        try:
            img = to_rgb(open_image(photo.path))
            img.thumbnail((thumb, thumb))
            sheet.paste(img, (x + 4, y + 4))
        except ImageError:
            pass
        good = isinstance(row, Prediction) and row.top_k[0][0] == photo.label
        if isinstance(row, Prediction) and row.pixels is not None:
            seen = Image.fromarray(row.pixels).resize((thumb, thumb), Image.Resampling.NEAREST)
            sheet.paste(seen.convert("RGB"), (x + thumb + 8, y + 4))
        guess = row.top_k[0][1] if isinstance(row, Prediction) else "error"
        draw.rectangle((x + 1, y + 1, x + cell_w - 2, y + cell_h - 2),
                       outline=(0, 150, 0) if good else (200, 0, 0), width=2)
        draw.text((x + 4, y + thumb + 6), f"{guess} / {LABELS[photo.label]}",
                  fill=(0, 0, 0))
    atomic.write_with(path, lambda tmp: sheet.save(tmp, "PNG"))
    return Path(path)
