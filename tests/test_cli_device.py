"""The device-side CLI habits: --version, info, shipped models by name, export folders as
models, ``-`` for standard input, --csv."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from fmnist_edge import photos
from fmnist_edge.cli import app
from fmnist_edge.contract import LABELS

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("fmnist-edge ")


def test_info_of_the_shipped_models_verifies_their_sha256():
    for name, fmt in (("default-tflite", "tflite-int8"), ("default-onnx", "onnx-int8")):
        result = runner.invoke(app, ["info", name, "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["format"] == fmt and doc["labels"] == list(LABELS)
        assert doc["sha256_check"].startswith("verified") and len(doc["sha256"]) == 64
        assert 0.9 < doc["test_accuracy"] < 1


def test_info_of_a_model_without_card(tmp_path):
    model = tmp_path / "bare.tflite"
    shutil.copy(FIXTURES / "mlp_int8.tflite", model)
    result = runner.invoke(app, ["info", str(model)])
    assert result.exit_code == 0, result.output
    assert "int8[N, 28, 28, 1]" in result.output and "sha256_check" in result.output


def test_export_folder_and_shipped_names_are_models(tmp_path, test_split):
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(FIXTURES / "mlp_int8.onnx", export / "model_int8.onnx")
    (export / "manifest.json").write_text(json.dumps(
        {"artifacts": {"onnx-int8": {"file": "model_int8.onnx"}}, "gate": {}}))
    image = tmp_path / "x.png"
    Image.fromarray(test_split[0][0]).save(image)
    for model in (str(export), "default", "default-onnx", "default-tflite"):
        result = runner.invoke(app, ["predict", str(image), "--model", model])
        assert result.exit_code == 0, (model, result.output)
    result = runner.invoke(app, ["benchmark", str(export), "--runs", "3", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    from fmnist_edge.predict import resolve_model

    run = tmp_path / "run"
    run.mkdir()
    shutil.move(str(export), run / "export")  # an exported run folder: its int8 artifact
    assert resolve_model(run) == run / "export" / "model_int8.onnx"
    result = runner.invoke(app, ["predict", str(image), "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "nothing" in result.output


def test_stdin_and_csv(tmp_path, test_split):
    rng = np.random.default_rng(4)
    buf = io.BytesIO()
    photos.render_phone_photo(test_split[0][1], int(test_split[1][1]), rng).save(buf, "JPEG")
    image = tmp_path / "a.png"
    Image.fromarray(test_split[0][0]).save(image)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", "-", str(image), "--csv", str(out), "--top-k", "2",
                                 "--model", str(FIXTURES / "mlp_int8.onnx")],
                           input=buf.getvalue())
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == ["-", str(image)]
    assert all(r["ok"] == "True" and r["label"] in LABELS for r in rows)
    assert len(rows[0]["top_k"].split(";")) == 2
    result = runner.invoke(app, ["predict", "-", "--model", str(FIXTURES / "mlp_int8.onnx")],
                           input=b"not an image")
    assert result.exit_code == 1 and "<stdin>" in result.output


def test_no_library_log_lines_on_stderr(tmp_path, data_dir, test_split):
    """predict, evaluate and benchmark on the TFLite and the ONNX model, as fresh processes:
    nothing from TensorFlow, absl or LiteRT reaches stderr."""
    import subprocess
    import sys

    image = tmp_path / "x.png"
    Image.fromarray(test_split[0][0]).save(image)
    cli = [sys.executable, "-c", "from fmnist_edge.cli import app; app()"]
    for model in ("default-tflite", "default-onnx"):
        for args in (["predict", str(image), "--model", model],
                     ["evaluate", model, "--data-dir", str(data_dir)],
                     ["benchmark", model, "--runs", "5", "--warmup", "1"]):
            done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300,
                                  env={k: v for k, v in __import__("os").environ.items()
                                       if k != "TF_CPP_MIN_LOG_LEVEL"})
            assert done.returncode == 0, done.stderr
            assert done.stderr == "", (args, done.stderr)
