"""Shared fixtures: the real Fashion-MNIST (from ../shared/fashion-mnist or
$FMNIST_EDGE_DATA), a seeded RNG, and skips for tests that need TensorFlow."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "fashion-mnist"

HAS_TF = importlib.util.find_spec("tensorflow") is not None


def pytest_collection_modifyitems(config, items):
    if HAS_TF:
        return
    skip = pytest.mark.skip(reason='needs TensorFlow: pip install "fmnist-edge[train]"')
    for item in items:
        if "tf" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("FMNIST_EDGE_DATA", SHARED_DATA))
    if not (path / "t10k-labels-idx1-ubyte.gz").exists() and not (
            path / "t10k-labels-idx1-ubyte").exists():
        pytest.fail(f"Fashion-MNIST not found at {path}: set FMNIST_EDGE_DATA")
    return path


@pytest.fixture(scope="session")
def test_split(data_dir):
    from fmnist_edge import data

    return data.load_split("test", data_dir)


@pytest.fixture(scope="session")
def train_split(data_dir):
    from fmnist_edge import data

    return data.load_split("train", data_dir)


def load_script(name: str):
    """A script of ``benchmarks/`` imported as a module (its folder on ``sys.path``, as when
    it runs)."""
    import sys

    path = ROOT / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_script():
    """``bench_script("peers")``: a benchmark script as a module (:func:`load_script`)."""
    return load_script


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's real caches or depends on $FMNIST_EDGE_DATA order."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
