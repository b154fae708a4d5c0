"""The export's settings are stated once (ExportConfig), and a card survives without its
sidecar. Light: no TensorFlow except where marked."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from fmnist_edge.contract import ModelCard
from fmnist_edge.export.config import FIELDS, ExportConfig

# Change one default of ExportConfig in a fresh interpreter, with no other edit, and see it
# in `export --help` and in the config the export runs with (the pipeline is replaced by a
# stand-in that prints the config it got, so no TensorFlow is needed).
_CHANGED_DEFAULT = textwrap.dedent("""
    import sys, types
    import fmnist_edge.export.config as c
    defaults = list(c.ExportConfig.__init__.__defaults__)
    defaults[c.FIELDS.index("sparsity")] = 0.375
    c.ExportConfig.__init__.__defaults__ = tuple(defaults)

    def export_run(source, config, **kwargs):
        print("CONFIG", config.sparsity, config.prune_epochs)
        raise SystemExit(0)

    stand_in = types.ModuleType("fmnist_edge.export.pipeline")
    stand_in.export_run, stand_in.ExportError = export_run, RuntimeError
    sys.modules["fmnist_edge.export.pipeline"] = stand_in
    import os, tempfile
    os.chdir(tempfile.mkdtemp())
    open("run.keras", "wb").close()  # the CLI resolves the source before export_run
    from typer.testing import CliRunner
    from fmnist_edge.cli import app
    runner = CliRunner()
    print(runner.invoke(app, ["export", "--help"], env={"COLUMNS": "250"}).output)
    print(runner.invoke(app, ["export", "run.keras"]).output)
""")


def test_changing_one_default_changes_help_and_behaviour():
    out = subprocess.run([sys.executable, "-c", _CHANGED_DEFAULT], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    sparsity_help = [line for line in out.stdout.splitlines() if "Pruning sparsity" in line]
    assert sparsity_help and "(default: 0.375" in sparsity_help[0]
    assert f"CONFIG 0.375 {ExportConfig().prune_epochs}" in out.stdout


def test_every_setting_is_an_option_that_defaults_to_none():
    import inspect

    from fmnist_edge import cli

    params = inspect.signature(cli.export).parameters
    for name in FIELDS:
        assert name in params, f"ExportConfig.{name} has no export option"
        assert params[name].default is None, f"--{name} restates its default"


def test_resolve_applies_overrides_and_refuses_unknown_ones():
    config = ExportConfig.resolve(sparsity=0.25, lr=None)
    assert config == dataclasses.replace(ExportConfig(), sparsity=0.25)
    with pytest.raises(ValueError, match="unknown export settings"):
        ExportConfig.resolve(sparsity_target=0.5)
    with pytest.raises(ValueError, match="--optimizer"):
        ExportConfig.resolve(optimizer="rmsprop")


def test_resolve_applies_the_architectures_own_export_defaults_before_the_options(
        monkeypatch):
    from fmnist_edge.export import config as config_module
    from fmnist_edge.train.config import ARCHITECTURES

    for arch, entry in ARCHITECTURES.items():
        assert set(entry.export) <= set(FIELDS), arch
        assert ExportConfig.resolve(arch) == dataclasses.replace(ExportConfig(), **entry.export)
    entry = dataclasses.replace(ARCHITECTURES["mlp"], export={"sparsity": 0.0, "qat_epochs": 0})
    monkeypatch.setitem(config_module.ARCHITECTURES, "mlp", entry)
    assert (ExportConfig.resolve("mlp").sparsity, ExportConfig.resolve("mlp").qat_epochs) == (0, 0)
    assert ExportConfig.resolve("mlp", sparsity=0.25).sparsity == 0.25  # the option wins
    assert ExportConfig.resolve(None) == ExportConfig.resolve("no-such-arch") == ExportConfig()


def test_export_command_resolves_the_runs_architecture_defaults(monkeypatch, tmp_path):
    """The CLI reads the run's config.json and passes the resolved config to export_run
    (replaced by a stand-in: no TensorFlow)."""
    import types

    from typer.testing import CliRunner

    from fmnist_edge import cli
    from fmnist_edge.train.config import ARCHITECTURES

    run = tmp_path / "resnet20" / "r1"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"not read: export_run is replaced")
    (run / "config.json").write_text(json.dumps({"arch": "resnet20"}))
    seen = {}

    def export_run(source, config, **kwargs):
        seen.update(source=source, config=config)
        raise RuntimeError("stop here")

    stand_in = types.ModuleType("fmnist_edge.export.pipeline")
    stand_in.export_run, stand_in.ExportError = export_run, RuntimeError
    monkeypatch.setitem(sys.modules, "fmnist_edge.export.pipeline", stand_in)
    out = CliRunner().invoke(cli.app, ["export", str(run), "--int8", "--seed", "3"])
    assert out.exit_code == 1 and "stop here" in out.output
    expected = ExportConfig.resolve("resnet20", seed=3)
    assert seen["source"] == run / "model.keras"
    assert seen["config"].seed == 3
    assert dataclasses.replace(seen["config"], formats=expected.formats) == expected
    for name, value in ARCHITECTURES["resnet20"].export.items():
        assert getattr(seen["config"], name) == value


def test_card_round_trips_every_field_and_keeps_unknown_keys():
    card = ModelCard(name="cnn", format="tflite-int8", source_run="runs/cnn/x",
                     test_accuracy=0.94, sha256="ab" * 32,
                     extra={"io": {"input_scale": 1.0}, "reference_test_accuracy": 0.95})
    assert ModelCard.from_dict(json.loads(card.to_json())) == card
    older = ModelCard.from_dict({"name": "cnn", "method": "qat"})
    assert older.extra == {"method": "qat"}


@pytest.mark.tf
@pytest.mark.slow
def test_prune_agreement_settings_are_export_configs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "prune_agreement.py"
    spec = importlib.util.spec_from_file_location("prune_agreement", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setting = module.parse_setting("sparsity=0.25,prune_epochs=2,distill=0,"
                                   "formats=tflite-int8+onnx-int8,weight_granularity=channel")
    config = dataclasses.replace(ExportConfig(), **setting)
    assert (config.sparsity, config.prune_epochs, config.distill) == (0.25, 2, False)
    assert config.formats == ("tflite-int8", "onnx-int8")
    with pytest.raises(SystemExit, match="unknown setting"):
        module.parse_setting("online=1")


def test_every_training_option_is_a_config_field_that_defaults_to_none():
    import inspect

    from fmnist_edge import cli
    from fmnist_edge.train.config import TRAIN_FIELDS

    params = inspect.signature(cli.train).parameters
    for name, param in params.items():
        if name in ("resume", "runs_dir", "data_dir"):
            continue
        assert name in TRAIN_FIELDS, f"--{name} is not a TrainConfig field"
        assert param.default is None, f"--{name} restates its default"


def test_field_defaults_give_the_default_and_each_architecture_that_sets_another():
    from fmnist_edge.export.config import field_defaults
    from fmnist_edge.train.config import ARCHITECTURES

    for name in FIELDS:
        default, own = field_defaults(name)
        value = getattr(ExportConfig(), name)
        assert default == (",".join(value) if isinstance(value, tuple) else str(value))
        assert own == {arch: str(getattr(ExportConfig.resolve(arch), name))
                       if not isinstance(entry.export[name], tuple)
                       else ",".join(entry.export[name])
                       for arch, entry in ARCHITECTURES.items() if name in entry.export}
    assert any(field_defaults(name)[1] for name in FIELDS)  # some entry sets its own
