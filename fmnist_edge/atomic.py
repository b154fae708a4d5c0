"""Atomic file writes: write a temporary file beside the target, then rename.

A crash or Ctrl-C never leaves a half-written artifact under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps ``target``'s suffix (some writers, e.g. Keras and matplotlib,
    choose the format from it). On any exception the temporary file is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` when its process was
    killed (``.<stem>.<random>.tmp<suffix>``); call it only on a folder no other process is
    writing (a run folder being resumed). Returns the files removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        if path.is_file() and ".tmp" in path.name:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_bytes(target: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``target``; returns ``target``."""
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON to ``target``; returns ``target``."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(target: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Atomically produce ``target`` with ``writer(tmp_path)`` (e.g. ``model.save``)."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


#: Marker file inside a staging folder: the pid of the process that owns it.
STAGE_MARKER = ".fmnist-edge-stage"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_stages(target: str | Path) -> list[Path]:
    """Remove staging folders of ``target`` left by a killed process (SIGKILL, power loss):
    only folders named ``.<target name>.*`` beside it that hold this module's marker with
    the pid of a process that no longer runs. Returns the folders removed."""
    target = Path(target)
    removed = []
    for stage in target.parent.glob(f".{target.name}.*"):
        marker = stage / STAGE_MARKER
        try:
            pid = int(marker.read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or not a staging folder: never touched
        if not _pid_alive(pid):
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    return removed


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``
    (any previous folder of that name is removed first), on any exception it is removed and
    ``target`` is left as it was. Stale staging folders of earlier, killed runs are removed
    first (:func:`remove_stale_stages`). The folder gets the usual mode (0777 minus the
    umask), not ``mkdtemp``'s 0700, so other users of a device can read the artifacts.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(target)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    marker = stage / STAGE_MARKER
    try:
        marker.write_text(f"{os.getpid()}\n")
        yield stage
        marker.unlink(missing_ok=True)
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration (main thread only), so the
    cleanup of a staged write or a training run also runs when a service manager stops us."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
