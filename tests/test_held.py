"""Regression tests for what already held in the reliability audit: unsafe Keras archives,
ONNX external data outside the model's folder, symlinked output targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fmnist_edge import atomic
from fmnist_edge.cli import app
from fmnist_edge.runtime import ModelFileError, load

runner = CliRunner()


@pytest.mark.tf
def test_keras_lambda_with_python_code_is_refused_everywhere(tmp_path):
    from fmnist_edge.train.keras_shim import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)  # arbitrary Python code in the file
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = tmp_path / "evil.keras"
    model.save(path)
    with pytest.raises(ModelFileError, match="evil.keras"):
        load(path)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    for args in (["predict", str(image), "--model", str(path)], ["evaluate", str(path)],
                 ["export", str(path), "--out", str(tmp_path / "out")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "evil.keras" in result.output, args
    assert not (tmp_path / "out").exists()


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "secret.bin").write_bytes(np.ones((784, 10), np.float32).tobytes())
    models = tmp_path / "models"
    models.mkdir()
    w = numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "31360")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = models / "escape.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="escape.onnx"):
        load(path)


def test_a_symlinked_output_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    atomic.write_json(link, {"a": 1})
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and '"a": 1' in link.read_text()


def test_previous_export_survives_a_failed_one(tmp_path):
    target = tmp_path / "export"
    with atomic.staged_dir(target) as stage:
        (stage / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(target) as stage:
            (stage / "manifest.json").write_text("half")
            raise RuntimeError("conversion failed")
    assert (target / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_paths_with_unusual_names_work(tmp_path):
    from PIL import Image

    odd = tmp_path / "sp ace" / "ünï cödé 'q'.png"
    odd.parent.mkdir()
    Image.new("L", (28, 28)).save(odd)
    fixtures = Path(__file__).parent / "fixtures"
    result = runner.invoke(app, ["predict", str(odd), "--model", str(fixtures / "mlp_int8.onnx")])
    assert result.exit_code == 0 and "ünï cödé" in result.output


@pytest.mark.tf
@pytest.mark.slow
def test_training_on_a_full_disk_is_a_clear_error(tmp_path, data_dir):
    """A file-size limit (RLIMIT_FSIZE) in a child process stands in for a full disk: the
    first large write (the checkpoint) fails with EFBIG."""
    import subprocess
    import sys

    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (150000, 150000));"
              "from fmnist_edge.cli import app; sys.argv = ['fmnist-edge'] + sys.argv[1:]; app()")
    done = subprocess.run(
        [sys.executable, "-c", script, "train", "cnn", "--epochs", "1", "--train-limit", "300",
         "--val-size", "100", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "error: cannot write" in done.stderr and "Traceback" not in done.stderr
    run = next((tmp_path / "runs" / "cnn").iterdir())
    assert not list(run.glob(".*.tmp*"))  # no half-written checkpoint left behind


@pytest.mark.tf
@pytest.mark.slow
def test_a_kill_while_the_checkpoint_is_written_keeps_the_history_whole(tmp_path, data_dir,
                                                                       monkeypatch):
    """The process dies inside the epoch-end checkpoint write (no later callback runs, as
    with SIGKILL); --resume must repeat that epoch, so history.json has every epoch once."""
    from fmnist_edge.train import callbacks, trainer
    from fmnist_edge.train.config import recipe

    original = callbacks.BestCheckpoint.on_epoch_end

    def dies_at_epoch_1(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # stands in for the kill: nothing after it runs
        return original(self, epoch, logs)

    monkeypatch.setattr(callbacks.BestCheckpoint, "on_epoch_end", dies_at_epoch_1)
    config = recipe("mlp", epochs=3, batch_size=64, train_limit=300, val_size=100)
    with pytest.raises(trainer.TrainingInterrupted):
        trainer.train(config, data_dir=data_dir, runs_dir=tmp_path, verbose=0)
    monkeypatch.setattr(callbacks.BestCheckpoint, "on_epoch_end", original)
    run = next((tmp_path / "mlp").iterdir())
    trainer.resume(run, data_dir=data_dir, verbose=0)
    import json

    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_a_corrupt_history_names_the_file(tmp_path):
    from fmnist_edge.runs import RunError, read_json

    (tmp_path / "history.json").write_text('[{"epoch": 0,')
    with pytest.raises(RunError, match="history.json"):
        read_json(tmp_path / "history.json", [])


@pytest.mark.tf
def test_export_of_a_keras3_model_names_the_fix(tmp_path, data_dir):
    """Plain `import keras` saves Keras 3 archives, which tf_keras cannot read: the export
    says so in one line instead of "Unrecognized keyword arguments: ['batch_shape']"."""
    import subprocess
    import sys

    path = tmp_path / "k3.keras"
    script = ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '0'; import keras; "
              "i = keras.Input((28, 28, 1)); "
              "m = keras.Model(i, keras.layers.Dense(10)(keras.layers.Flatten()(i))); "
              f"m.save({str(path)!r}); print(keras.__version__)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or not done.stdout.strip().startswith("3."):
        pytest.skip(f"Keras 3 not importable here: {done.stderr[-300:]}")
    result = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "out"),
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "saved with Keras 3." in result.output and "tf_keras" in result.output
    assert "batch_shape" not in result.output and not (tmp_path / "out").exists()
