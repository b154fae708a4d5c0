"""Models and inputs that load but must not get far: broken cards, fixed batch sizes, NaN
outputs, thread counts, pipes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fmnist_edge.cli import app
from fmnist_edge.runtime import ModelFileError, load

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


@pytest.mark.parametrize("card", ["[1, 2, 3]", "not json {", '{"labels": 5}'])
def test_a_broken_card_is_a_warning_not_an_unusable_model(tmp_path, card, caplog):
    model = tmp_path / "m.onnx"
    shutil.copy(FIXTURES / "mlp_int8.onnx", model)
    (tmp_path / "m.onnx.json").write_text(card)
    runtime = load(model)
    assert runtime.logits(np.zeros((3, 28, 28), np.uint8)).shape == (3, 10)
    assert "m.onnx.json" in caplog.text and "ignoring" in caplog.text


def _onnx_model(path: Path, *, batch, weight: float):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 28, 28, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    w = numpy_helper.from_array(np.full((784, 10), weight, np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["flat"]),
                               helper.make_node("MatMul", ["flat", "w"], ["y"])],
                              "g", [x], [y], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_fixed_batch_onnx_is_served_in_chunks(tmp_path):
    model = load(_onnx_model(tmp_path / "b1.onnx", batch=1, weight=0.01))
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    expected = images.reshape(5, -1).astype(np.float32).sum(1, keepdims=True) * 0.01
    np.testing.assert_allclose(model.logits(images), np.repeat(expected, 10, 1), rtol=1e-5)


def test_nan_logits_are_refused(tmp_path):
    path = _onnx_model(tmp_path / "nan.onnx", batch="N", weight=float("nan"))
    with pytest.raises(ModelFileError, match="nan.onnx.*NaN"):
        load(path)


def test_threads_out_of_range_name_the_option(tmp_path):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    for bad in ("0", "-1", str((os.cpu_count() or 1) + 1), "100000"):
        result = runner.invoke(app, ["predict", str(image), "--threads", bad,
                                     "--model", str(FIXTURES / "mlp_int8.tflite")])
        assert result.exit_code == 1 and "--threads" in result.output, bad
        assert "Traceback" not in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_not_read(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["predict", str(fifo), "--json",
                                 "--model", str(FIXTURES / "mlp_int8.onnx")])
    assert result.exit_code == 1
    row = json.loads(result.stdout)["results"][0]
    assert not row["ok"] and "not a regular file" in row["error"]


def _png(tmp_path: Path) -> Path:
    from PIL import Image

    image = tmp_path / "shoe.png"
    Image.new("L", (28, 28)).save(image)
    return image


def test_save_preprocessed_on_a_file_still_prints_predictions(tmp_path):
    in_the_way = tmp_path / "seen"
    in_the_way.write_text("a file")
    result = runner.invoke(app, ["predict", str(_png(tmp_path)), "--save-preprocessed",
                                 str(in_the_way), "--model", str(FIXTURES / "mlp_int8.onnx")])
    assert result.exit_code == 1
    assert "shoe.png:" in result.stdout and "%" in result.stdout  # the prediction printed
    assert "--save-preprocessed" in result.output and "Traceback" not in result.output
    assert in_the_way.read_text() == "a file"


def test_save_preprocessed_on_a_full_disk(tmp_path, monkeypatch):
    import errno

    from fmnist_edge import atomic

    def full(target, writer):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(atomic, "write_with", full)
    result = runner.invoke(app, ["predict", str(_png(tmp_path)), "--json", "--save-preprocessed",
                                 str(tmp_path / "seen"), "--model",
                                 str(FIXTURES / "mlp_int8.onnx")])
    assert result.exit_code == 1
    row = json.loads(result.stdout)["results"][0]
    assert row["ok"] and "No space left" in row["save_error"]


def test_benchmark_outputs_are_checked_before_the_work(tmp_path):
    model = str(FIXTURES / "mlp_int8.tflite")
    (tmp_path / "afile").write_text("x")
    for args, needle in ((["--json", str(tmp_path)], "is a folder"),
                         (["--csv", str(tmp_path / "afile" / "x.csv")], "is a file"),
                         (["--runs", "0"], "--runs"), (["--runs", "-3"], "--runs")):
        result = runner.invoke(app, ["benchmark", model, *args])
        assert result.exit_code == 1 and needle in result.output, (args, result.output)
        assert "p50" not in result.output  # failed before measuring


def test_benchmark_table_survives_a_full_disk(tmp_path, monkeypatch):
    import errno

    from fmnist_edge import atomic

    def full(target, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(atomic, "write_json", full)
    result = runner.invoke(app, ["benchmark", str(FIXTURES / "mlp_int8.tflite"), "--runs", "5",
                                 "--warmup", "1", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 1
    assert "p50" in result.output and "No space left" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("field,value,option", [
    ("zoom", 5.0, "--zoom"), ("val_size", 70000, "--val-size"),
    ("train_limit", -5, "--train-limit"), ("dropout", 1.5, "--dropout"),
    ("lr", -1.0, "--lr"), ("shift_px", 20, "--shift-px"), ("photo_augment", 2.0,
                                                           "--photo-augment")])
def test_training_options_are_range_checked_by_name(field, value, option):
    from fmnist_edge.train.config import recipe

    with pytest.raises(ValueError, match=option):
        recipe("cnn", **{field: value})


@pytest.mark.parametrize("field,value,option", [
    ("batch_size", 0, "--batch-size"), ("latency_runs", 0, "--latency-runs"),
    ("lr", -1.0, "--lr"), ("val_size", 70000, "--val-size")])
@pytest.mark.tf
def test_export_options_are_range_checked_by_name(field, value, option):
    from fmnist_edge.export.config import ExportConfig

    with pytest.raises(ValueError, match=option):
        ExportConfig(**{field: value})


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"arch": "cnn", "bogus": 1}'])
def test_a_corrupt_config_json_names_the_file(tmp_path, text):
    from fmnist_edge.runs import RunError
    from fmnist_edge.train.config import TrainConfig

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunError, match="config.json"):
        TrainConfig.read(tmp_path / "config.json")


def test_idx_headers_with_empty_or_huge_shapes_are_data_errors():
    from fmnist_edge.data import DataError, parse_idx

    for header in (b"\x00\x00\x08\x00", b"\x00\x00\x08\x02" + b"\x00\x00\x00\x00" * 2,
                   b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3):
        with pytest.raises(DataError):
            parse_idx(header + b"\x00" * 16, source="x-idx")


def test_an_unreadable_data_file_is_a_data_error(tmp_path):
    from fmnist_edge.data import DataError, read_idx

    folder = tmp_path / "t10k-labels-idx1-ubyte"
    folder.mkdir()  # a folder where the file should be: reading it fails with an OSError
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*cannot read"):
        from fmnist_edge.data import _decompressed

        _decompressed(folder, str(folder))
    assert read_idx  # the public reader refuses it too (not a file)
    with pytest.raises(DataError):
        read_idx(folder)


def test_a_model_whose_bytes_changed_is_refused_unless_no_verify(tmp_path):
    import hashlib

    model = tmp_path / "m.onnx"
    blob = bytearray((FIXTURES / "mlp_int8.onnx").read_bytes())
    (tmp_path / "m.onnx.json").write_text(json.dumps(
        {"name": "mlp", "format": "onnx-int8", "sha256": hashlib.sha256(blob).hexdigest()}))
    blob[-200] ^= 0xFF  # one flipped byte in the weights: the model still loads and runs
    model.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="m.onnx.*sha256.*--no-verify"):
        load(model)
    assert load(model, verify=False).logits(np.zeros((1, 28, 28), np.uint8)).shape == (1, 10)
    image = _png(tmp_path)
    result = runner.invoke(app, ["predict", str(image), "--model", str(model)])
    assert result.exit_code == 1 and "sha256" in result.output
    result = runner.invoke(app, ["predict", str(image), "--model", str(model), "--no-verify"])
    assert result.exit_code == 0, result.output


def test_benchmark_refuses_corrupt_data_instead_of_random_pixels(tmp_path):
    bad = tmp_path / "data"
    bad.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (bad / f"{name}.gz").write_bytes(b"\x1f\x8b broken")
    result = runner.invoke(app, ["benchmark", str(FIXTURES / "mlp_int8.tflite"), "--runs", "3",
                                 "--data-dir", str(bad)])
    assert result.exit_code == 1 and "gzip" in result.output


@pytest.mark.tf
def test_imagenet_weights_offline_is_a_clear_error(monkeypatch):
    from fmnist_edge.train import architectures
    from fmnist_edge.train.keras_shim import keras

    def offline(*args, **kwargs):  # what keras' get_file raises without network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    import tf_keras.src.applications.mobilenet_v2 as mobilenet_v2

    monkeypatch.setattr(mobilenet_v2.data_utils, "get_file", offline)
    with pytest.raises(FileNotFoundError, match="--weights imagenet.*--weights PATH"):
        architectures.build("mobilenetv2", input_size=32, weights="imagenet")


def test_max_pixels_refuses_a_large_image_by_name(tmp_path):
    from PIL import Image

    big = tmp_path / "poster.png"
    Image.new("L", (3000, 2000), 255).save(big)
    model = str(FIXTURES / "mlp_int8.onnx")
    result = runner.invoke(app, ["predict", str(big), "--max-pixels", "1000000", "--model", model])
    assert result.exit_code == 1 and "poster.png" in result.output
    assert "--max-pixels" in result.output
    result = runner.invoke(app, ["predict", str(big), "--model", model])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(big), "--max-pixels", "0", "--model", model])
    assert result.exit_code == 1 and "--max-pixels" in result.output
