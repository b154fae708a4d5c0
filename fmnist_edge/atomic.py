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


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``
    (any previous folder of that name is removed first), on any exception it is removed and
    ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield stage
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
