"""Seeded fuzzing of every loader a user's file reaches: IDX data, images, .tflite, .onnx.
Only the project's own error types may come out (never a library's traceback or a crash)."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def mutations(blob: bytes, count: int, seed: int):
    """Seeded mutants of ``blob``: byte flips, truncations, inserted and deleted runs,
    overwritten headers."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        data = bytearray(blob)
        kind = rng.integers(5)
        if kind == 0:
            for _ in range(int(rng.integers(1, 20))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
        elif kind == 1:
            data = data[:int(rng.integers(len(data)))]
        elif kind == 2:
            at = int(rng.integers(len(data)))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif kind == 3:
            at = int(rng.integers(len(data)))
            del data[at:at + int(rng.integers(1, 256))]
        else:
            head = min(len(data), 64)
            data[:head] = rng.integers(0, 256, head, dtype=np.uint8).tobytes()
        yield bytes(data)


def test_idx_reader(tmp_path, test_split):
    from fmnist_edge.data import DataError, parse_idx, read_idx

    labels = test_split[1][:300]
    blob = b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes()
    for i, mutant in enumerate(mutations(blob, 300, seed=1)):
        try:
            parse_idx(mutant, source="fuzz")
        except DataError:
            pass
        path = tmp_path / f"m{i % 4}.gz"
        path.write_bytes(gzip.compress(mutant) if i % 2 else mutant)
        try:
            read_idx(path)
        except DataError:
            pass


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_loader(tmp_path, test_split, fmt):
    from fmnist_edge.preprocess import ImageError, load_image

    photo = Image.fromarray(255 - test_split[0][0]).resize((64, 64)).convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, fmt)
    for i, mutant in enumerate(mutations(buf.getvalue(), 300, seed=2)):
        path = tmp_path / f"m{i % 4}.{fmt.lower()}"
        path.write_bytes(mutant)
        try:
            out = load_image(path)
            assert out.pixels.shape == (28, 28) and out.pixels.dtype == np.uint8
        except ImageError as exc:
            assert str(path) in str(exc)


_MODEL_FUZZ = r"""
import sys, numpy as np
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_fuzz import mutations
from fmnist_edge.runtime import ModelFileError, load
src, out = Path(sys.argv[1]), Path(sys.argv[2])
ok = refused = 0
for i, mutant in enumerate(mutations(src.read_bytes(), int(sys.argv[3]), seed=3)):
    path = out / f"m{{i % 4}}{{src.suffix}}"
    path.write_bytes(mutant)
    try:
        load(path).logits(np.zeros((2, 28, 28), np.uint8))
        ok += 1
    except ModelFileError as exc:
        assert str(path) in str(exc), exc
        refused += 1
print(ok, refused)
"""


@pytest.mark.parametrize("model", ["mlp_int8.tflite", "mlp_int8.onnx"])
def test_model_loaders(tmp_path, model):
    """In a child process: a crash of the native library fails this test, not the suite."""
    script = _MODEL_FUZZ.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script, str(FIXTURES / model), str(tmp_path),
                           "300"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ok, refused = map(int, done.stdout.split()[-2:])
    assert ok + refused == 300 and refused > 150
