"""IDX reader, checksum verification, data location and download."""

from __future__ import annotations

import gzip
import io
import shutil

import numpy as np
import pytest

from fmnist_edge import data
from fmnist_edge.data import DataError


def test_load_both_splits_verified(data_dir):
    x, y = data.load_split("train", data_dir)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10
    x, y = data.load_split("test", data_dir)
    assert x.shape == (10000, 28, 28)
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_unknown_split(data_dir):
    with pytest.raises(ValueError, match="choose from"):
        data.load_split("val", data_dir)


def _copy(data_dir, tmp_path, name="data"):
    dest = tmp_path / name
    shutil.copytree(data_dir, dest)
    for p in dest.iterdir():
        p.chmod(0o644)
    return dest


def test_raw_uncompressed_files_work(data_dir, tmp_path):
    dest = tmp_path / "raw"
    dest.mkdir()
    for spec in data.FILES.values():
        (dest / spec.name).write_bytes(gzip.decompress((data_dir / f"{spec.name}.gz").read_bytes()))
    x, y = data.load_split("test", dest)
    assert x.shape == (10000, 28, 28)


def test_truncated_gzip_names_the_file(data_dir, tmp_path):
    dest = _copy(data_dir, tmp_path)
    target = dest / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:2000])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*truncated"):
        data.load_split("test", dest)


def test_truncated_idx_payload(data_dir, tmp_path):
    dest = _copy(data_dir, tmp_path)
    target = dest / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-10]))
    with pytest.raises(DataError, match="t10k-labels.*truncated or corrupt"):
        data.load_split("test", dest)


def test_checksum_mismatch_is_refused(data_dir, tmp_path):
    dest = _copy(data_dir, tmp_path)
    target = dest / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid label file, but not the release
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="sha256"):
        data.load_split("test", dest)


def test_swapped_files_are_refused(data_dir, tmp_path):
    dest = _copy(data_dir, tmp_path)
    shutil.copy(dest / "train-labels-idx1-ubyte.gz", dest / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"shape \(10000,\).*found shape \(60000,\)"):
        data.load_split("test", dest)


def test_bad_magic():
    with pytest.raises(DataError, match="bad magic"):
        data.parse_idx(b"\x01\x02\x08\x01" + b"\x00" * 8, source="x")


def test_parse_idx_roundtrip():
    payload = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = b"\x00\x00\x08\x03" + np.array([2, 3, 4], ">u4").tobytes() + payload.tobytes()
    np.testing.assert_array_equal(data.parse_idx(raw), payload)


def test_data_dir_missing_files_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(DataError, match="--data-dir points at .*lacks"):
        data.locate(tmp_path)


def test_env_var_is_used(data_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(data_dir))
    assert data.locate() == data_dir


def test_keras_cache_is_found(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    keras_dir = data.keras_cache_dir()
    keras_dir.parent.mkdir(parents=True)
    shutil.copytree(data_dir, keras_dir)
    assert data.locate() == keras_dir


def test_offline_error_lists_places_and_fix(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)

    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "download_to",
                        lambda target, progress=False: data.__dict__["_orig_download_to"](
                            target, opener=offline))
    monkeypatch.setitem(data.__dict__, "_orig_download_to", _ORIG_DOWNLOAD)
    with pytest.raises(DataError) as err:
        data.locate()
    message = str(err.value)
    assert "Keras cache" in message and "fmnist-edge cache" in message
    assert "--data-dir" in message and data.ENV_VAR in message
    assert "network unreachable" in message


_ORIG_DOWNLOAD = data.download_to


class _Response(io.BytesIO):
    def __init__(self, payload):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _serving(data_dir, corrupt_first_mirror=False):
    calls = []

    def opener(url, timeout):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        payload = (data_dir / name).read_bytes()
        if corrupt_first_mirror and url.startswith(data.MIRRORS[0]):
            payload = payload[: len(payload) // 2]
        return _Response(payload)

    return opener, calls


def test_download_verifies_and_renames(data_dir, tmp_path):
    opener, calls = _serving(data_dir)
    target = data.download_to(tmp_path / "dl", opener=opener, progress=True)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{s.name}.gz" for s in data.FILES.values())
    x, _ = data.load_split("test", target)
    assert x.shape == (10000, 28, 28)
    assert len(calls) == 4
    # A second call finds verified files and downloads nothing.
    data.download_to(tmp_path / "dl", opener=opener)
    assert len(calls) == 4


def test_download_rejects_corrupt_mirror_and_falls_back(data_dir, tmp_path):
    opener, calls = _serving(data_dir, corrupt_first_mirror=True)
    target = data.download_to(tmp_path / "dl", opener=opener)
    assert all(not p.name.endswith(".part") for p in target.iterdir())
    assert sum(u.startswith(data.MIRRORS[1]) for u in calls) == 4
    data.load_split("train", target)


def test_failed_download_leaves_no_partial_file(data_dir, tmp_path):
    opener, _ = _serving(data_dir, corrupt_first_mirror=True)
    with pytest.raises(DataError, match="truncated"):
        data.download_to(tmp_path / "dl", opener=opener, mirrors=data.MIRRORS[:1])
    assert list((tmp_path / "dl").iterdir()) == []


def test_stratified_split_is_seeded_and_balanced(rng):
    labels = np.repeat(np.arange(10), 600).astype(np.uint8)
    tr, va = data.stratified_split(labels, 500, seed=3)
    assert len(va) == 500 and len(tr) == 5500
    assert np.bincount(labels[va]).tolist() == [50] * 10
    assert not set(tr) & set(va)
    np.testing.assert_array_equal(va, data.stratified_split(labels, 500, seed=3)[1])
    assert not np.array_equal(va, data.stratified_split(labels, 500, seed=4)[1])


def test_staged_dir_replaces_the_folder_only_on_success(tmp_path):
    from fmnist_edge import atomic

    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic.staged_dir(target) as stage:
        (stage / "half.txt").write_text("half")
        raise RuntimeError("crash mid-way")
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic.staged_dir(target) as stage:
        (stage / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_evaluate_needs_only_the_test_files(tmp_path, data_dir):
    """A device copies only the two t10k files: evaluate works offline with them."""
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    from fmnist_edge.cli import app

    only_test = tmp_path / "t10k"
    only_test.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        src = next(p for p in (Path(data_dir) / f"{name}.gz", Path(data_dir) / name)
                   if p.is_file())
        shutil.copy(src, only_test / src.name)
    model = Path(__file__).parent / "fixtures" / "mlp_int8.onnx"
    result = CliRunner().invoke(app, ["evaluate", str(model), "--data-dir", str(only_test)])
    assert result.exit_code == 0, result.output
    assert "test top-1" in result.output
    with pytest.raises(DataError, match="train-images"):
        data.load_split("train", only_test)
