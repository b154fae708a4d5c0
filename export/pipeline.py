"""``fmnist-edge export``: the stages in order, into ``<run>/export/``.

1. data (:mod:`export.data`), 2. compress (:mod:`export.compress`), 3-4. make and choose
(:mod:`export.make`), 5. verify (:mod:`export.verify`), then the records
(:mod:`export.report`). The whole export folder is assembled in a temporary sibling folder
and renamed into place at the end, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist_edge import atomic, runs
from fmnist_edge.export import compress, make, report, verify
from fmnist_edge.export import data as export_data
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.export.make import ExportError
from fmnist_edge.export.source import load_keras
from fmnist_edge.formats import FORMATS
from fmnist_edge.provenance import provenance
from fmnist_edge.train.keras_shim import keras

__all__ = ["ExportError", "ExportResult", "check_output_dir", "export_run"]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its parity record, and whether the gate passed."""

    out_dir: Path
    parity: dict[str, Any]
    passed: bool


def check_output_dir(out: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder the export must not write or replace.

    ``--overwrite`` replaces only an export folder this tool wrote (it holds a
    ``manifest.json`` with ``artifacts`` and ``gate``), never the run folder, a folder that
    contains the run, or anything else.

    Raises:
        ExportError: ``out`` is a file, exists without ``overwrite``, or is not ours to
            replace.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder; choose a folder path")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    resolved, run = out.resolve(), run_dir.resolve()
    if resolved == run or resolved in run.parents:
        raise ExportError(f"refusing to replace {out}: it holds the run folder {run_dir}; "
                          f"choose an --out of its own (default {runs.Run(run_dir).export.root})")
    try:
        manifest = json.loads(runs.ExportFolder(out).manifest.read_text())
        ours = isinstance(manifest, dict) and {"artifacts", "gate"} <= set(manifest)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ExportError(f"refusing to replace {out}: it is not an export folder written by "
                          "fmnist-edge (no manifest.json); choose another --out or move it "
                          "away yourself")


def export_run(source: str | Path | None, config: ExportConfig, *,
               data_dir: str | Path | None = None,
               runs_dir: str | Path = runs.DEFAULT_RUNS_DIR,
               out_dir: str | Path | None = None, overwrite: bool = False,
               verbose: int = 0) -> ExportResult:
    """Export a trained run: prune + QAT, convert, verify parity on the full test set.

    Args:
        source: run folder or ``.keras`` file (``None``: the newest run under ``runs_dir``).
        config: export settings.
        data_dir: Fashion-MNIST folder (else located as in :func:`fmnist_edge.data.locate`).
        runs_dir: where to look for the newest run.
        out_dir: output folder (default ``<run>/export``).
        overwrite: replace an existing export folder.
        verbose: Keras verbosity of the fine-tuning epochs (stages are logged at INFO).

    Returns:
        :class:`ExportResult`; ``passed`` is False when an artifact failed the gate (the
        folder is still written, with the failure recorded in parity.json/parity.md).

    Raises:
        fmnist_edge.runs.RunError: no such run / model.
        fmnist_edge.runtime.ModelFileError: unreadable or non-conforming model.
        ExportError: output exists and ``overwrite`` is false.
        fmnist_edge.data.DataError: missing or corrupt data.
    """
    start = time.perf_counter()
    # Taken now, not when the export ends: the commit of the code that runs (an export of a
    # large model takes an hour, and the checkout may move meanwhile).
    prov = provenance()
    model_path = runs.resolve_model(source if source is not None else runs.newest_run(runs_dir))
    out = Path(out_dir) if out_dir else runs.Run(model_path.parent).export.root
    check_output_dir(out, model_path.parent, overwrite)
    reference = load_keras(model_path)
    data = export_data.load(model_path.parent, config, data_dir)
    keras.utils.set_random_seed(config.seed)
    with atomic.sigterm_as_interrupt(), atomic.staged_dir(out) as stage:
        ref = verify.Reference.of(reference, model_path, data.x_test, data.y_test)
        compressed = None
        if any(FORMATS[name].quantized for name in config.formats):
            # a fresh copy: pruning rewrites the layers it wraps
            compressed = compress.compress_model(load_keras(model_path), reference, config,
                                                 data, verbose)
        formats = [FORMATS[name] for name in config.formats]
        notes = make.make_artifacts(stage, formats, reference, compressed, data, config)
        result = verify.verify(stage, ref, data, config, notes, compressed)
        report.write_records(runs.ExportFolder(stage), result, notes, compressed, config,
                             prov, time.perf_counter() - start)
    return ExportResult(out, result, result["gate"]["status"] == "passed")
