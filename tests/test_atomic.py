"""Atomic writes and staged folders: what survives a kill, what is cleaned up, and what is
never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fmnist_edge import atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_stages_of_killed_runs_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "export"
    stale = tmp_path / ".export.dead1234"
    stale.mkdir()
    (stale / atomic.STAGE_MARKER).write_text(f"{_dead_pid()}\n")
    (stale / "model_int8.tflite").write_bytes(b"x" * 1000)
    live = tmp_path / ".export.live5678"
    live.mkdir()
    (live / atomic.STAGE_MARKER).write_text(f"{os.getpid()}\n")
    unmarked = tmp_path / ".export.user"
    unmarked.mkdir()  # someone else's folder that happens to match the pattern
    assert atomic.remove_stale_stages(target) == [stale]
    assert not stale.exists() and live.exists() and unmarked.exists()


def test_staged_dir_replaces_on_success_and_keeps_the_old_on_interrupt(tmp_path):
    target = tmp_path / "export"
    with atomic.staged_dir(target) as stage:
        (stage / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    assert not (target / atomic.STAGE_MARKER).exists()
    with pytest.raises(KeyboardInterrupt):
        with atomic.sigterm_as_interrupt(), atomic.staged_dir(target) as stage:
            (stage / "a.txt").write_text("second")
            os.kill(os.getpid(), signal.SIGTERM)  # a service manager stopping us
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


def test_sigterm_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with atomic.sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_concurrent_runs_get_their_own_folders(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from fmnist_edge import runs

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: runs.new_run_dir("cnn", tmp_path), range(16)))
    assert len(set(made)) == 16 and all(p.is_dir() for p in made)


def test_runs_dir_that_is_a_file_is_a_clear_error(tmp_path):
    from fmnist_edge import runs

    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(runs.RunError, match="--runs-dir"):
        runs.new_run_dir("cnn", tmp_path / "runs")


def test_temps_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".model.abc123.tmp.keras").write_bytes(b"half")
    (tmp_path / "model.keras").write_bytes(b"whole")
    (tmp_path / "history.json").write_text("[]")
    assert [p.name for p in atomic.remove_stale_temps(tmp_path)] == [".model.abc123.tmp.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "model.keras"]
