"""Test-set evaluation of any model file through its runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist_edge import data, runs
from fmnist_edge.metrics import classification_report
from fmnist_edge.runtime import load


def evaluate_model(path: str | Path, *, data_dir: str | Path | None = None,
                   num_threads: int | None = None, verify: bool = True) -> dict[str, Any]:
    """Evaluate a run folder or model file on the 10,000 Fashion-MNIST test images.

    Returns:
        :func:`fmnist_edge.metrics.classification_report` plus ``model`` (the file).

    Raises:
        fmnist_edge.runs.RunError: no such run folder or file.
        fmnist_edge.runtime.ModelFileError: unreadable or non-conforming model.
        fmnist_edge.data.DataError: missing or corrupt test data.
    """
    model_path = runs.resolve_model(path)
    runtime = load(model_path, num_threads=num_threads, verify=verify)
    images, labels = data.load_split("test", data_dir)
    report = classification_report(runtime.logits(images), labels)
    return {"model": str(model_path), **report}
