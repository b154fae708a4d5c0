"""The CLI through typer's CliRunner: thin layer, clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fmnist_edge.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate"):
        assert command in result.output


@pytest.mark.tf
def test_unknown_architecture_lists_choices(data_dir):
    result = runner.invoke(app, ["train", "lenet", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "unknown architecture 'lenet'" in result.output and "mobilenetv2" in result.output


@pytest.mark.tf
def test_backbone_option_on_cnn_fails_instead_of_being_ignored(data_dir, tmp_path):
    result = runner.invoke(app, ["train", "cnn", "--input-size", "64", "--data-dir",
                                 str(data_dir), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1 and "--input-size" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.tf
def test_missing_data_gives_one_clear_error(tmp_path):
    result = runner.invoke(app, ["train", "mlp", "--data-dir", str(tmp_path / "nowhere"),
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "nowhere" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_train_then_evaluate(data_dir, tmp_path):
    result = runner.invoke(app, ["train", "mlp", "--epochs", "2", "--train-limit", "3000",
                                 "--val-size", "500", "--runs-dir", str(tmp_path),
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "test top-1" in result.output
    run = next((tmp_path / "mlp").iterdir())
    result = runner.invoke(app, ["evaluate", str(run), "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    reported = json.loads((run / "metrics.json").read_text())["top1_accuracy"]
    assert report["top1_accuracy"] == pytest.approx(reported, abs=1e-4)
    assert report["num_images"] == 10000
    human = runner.invoke(app, ["evaluate", str(run), "--data-dir", str(data_dir)])
    assert "Ankle boot" in human.output and "confusion matrix" in human.output


def test_evaluate_missing_run_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "no such run folder or model file" in result.output
