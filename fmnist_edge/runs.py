"""Run folders: ``runs/<arch>/<run-id>/``, their export folders, and the files inside them.

Every file name of a run folder and of an export folder is written here once; code reaches
them through :class:`Run` and :class:`ExportFolder`.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RUNS_DIR = Path("runs")
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
STATE_FILE = "state.json"
BACKUP_DIR = "backup"
EXPORT_DIR = "export"


def _file(name: str, doc: str) -> property:
    """A layout attribute: ``root / name``."""
    return property(lambda self: self.root / name, doc=f"``{name}``: {doc}")


@dataclass(frozen=True)
class ExportFolder:
    """The files of an export folder (``<run>/export/`` unless ``--out`` chose another)."""

    root: Path
    manifest = _file("manifest.json", "artifacts, sha256, sizes, config, versions, provenance")
    parity_json = _file("parity.json", "the parity record of every artifact and the gate")
    parity_md = _file("parity.md", "the parity table")
    parity_png = _file("parity.png", "accuracy against latency")
    config = _file("export_config.json", "the resolved ExportConfig")

    def artifact(self, fmt: str) -> Path:
        """The artifact of format ``fmt`` (a name of ``fmnist_edge.formats.FORMATS``)."""
        from fmnist_edge.formats import FORMATS

        return self.root / FORMATS[fmt].filename


@dataclass(frozen=True)
class Run:
    """The files of one run folder; ``prefix`` names a multi-stage recipe's stage files
    (``stage1_``)."""

    root: Path
    model = _file(MODEL_FILE, "the best validation checkpoint")
    config = _file(CONFIG_FILE, "the resolved TrainConfig")
    metrics = _file(METRICS_FILE, "test metrics, environment and provenance")
    state = _file(STATE_FILE, "running, interrupted or finished, with the segments")
    backup = _file(BACKUP_DIR, "Keras BackupAndRestore state for --resume")

    def file(self, name: str, prefix: str = "") -> Path:
        return self.root / f"{prefix}{name}"

    @property
    def export(self) -> ExportFolder:
        return ExportFolder(self.root / EXPORT_DIR)


class RunError(RuntimeError):
    """A run folder or model path is missing or incomplete."""


def read_json(path: str | Path, default: Any = None) -> Any:
    """Parse a run folder's JSON file (``default`` when it does not exist).

    Raises:
        RunError: unreadable or not JSON (names the file and the way out).
    """
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable or corrupt ({exc}); restore it, or start a new "
                       "run") from exc


def new_run_dir(arch: str, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """Create and return a new, empty ``runs_dir/arch/<UTC timestamp>[-n]`` folder.

    The folder is created exclusively, so concurrent runs started in the same second get
    different folders (``-2``, ``-3``, ...).

    Raises:
        RunError: ``runs_dir`` (or a part of it) is a file or cannot be written.
    """
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / arch
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise RunError(f"--runs-dir {runs_dir}: cannot create {base} ({exc.strerror}); "
                       "give a folder path") from exc
    except OSError as exc:
        raise RunError(f"--runs-dir {runs_dir}: cannot create {base} ({exc.strerror}); "
                       "choose a writable folder") from exc
    n = 1
    while True:
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def newest_run(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The most recently modified run folder that holds a model.

    Raises:
        RunError: no run with a model under ``runs_dir``.
    """
    runs = sorted(Path(runs_dir).glob(f"*/*/{MODEL_FILE}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RunError(f"no trained run under {Path(runs_dir).resolve()}; "
                       "train one with `fmnist-edge train ARCH` or pass a run folder")
    return runs[-1].parent


def resolve_model(path: str | Path) -> Path:
    """A run folder or model file -> the model file path.

    Raises:
        RunError: the path does not exist or the run holds no model.
    """
    path = Path(path)
    if path.is_dir():
        model = path / MODEL_FILE
        if not model.is_file():
            raise RunError(f"{path} holds no {MODEL_FILE}; is it a finished run folder?")
        return model
    if not path.is_file():
        raise RunError(f"{path}: no such run folder or model file")
    return path


def run_arch(model_path: str | Path) -> str | None:
    """The architecture named by the ``config.json`` beside ``model_path`` (a run's), or
    ``None`` for a model file without one.

    Raises:
        RunError: that ``config.json`` is unreadable or not JSON.
    """
    config = read_json(Path(model_path).parent / CONFIG_FILE, None)
    arch = config.get("arch") if isinstance(config, dict) else None
    return arch if isinstance(arch, str) else None
