"""Runtimes without TensorFlow: fixture models (tests/fixtures) vs their Keras logits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fmnist_edge.runtime import ModelFileError, Runtime, load

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def reference(test_split):
    images = test_split[0][:200]
    return images, np.load(FIXTURES / "reference.npz")["logits"]


@pytest.mark.parametrize("name", ["mlp_fp32.tflite", "mlp_fp32.onnx"])
def test_float_models_reproduce_keras_logits(name, reference):
    images, logits = reference
    runtime = load(FIXTURES / name)
    assert isinstance(runtime, Runtime)
    out = runtime.logits(images)
    assert out.dtype == np.float32 and out.shape == (200, 10)
    np.testing.assert_allclose(out, logits, atol=1e-4)


@pytest.mark.parametrize("name,dtype,zero_point", [
    ("mlp_int8.tflite", np.int8, -128), ("mlp_uint8io.tflite", np.uint8, 0)])
def test_integer_io_is_read_from_the_model(name, dtype, zero_point, reference):
    images, logits = reference
    runtime = load(FIXTURES / name)
    assert runtime.input_dtype == dtype
    assert runtime.input_scale == pytest.approx(1.0)
    assert runtime.input_zero_point == zero_point
    out = runtime.logits(images)
    assert out.dtype == np.float32
    agreement = (out.argmax(1) == logits.argmax(1)).mean()
    assert agreement >= 0.95
    # Dequantized logits stay close to the float ones.
    assert np.abs(out - logits).mean() < 0.5


def test_onnx_int8_agrees_with_float(reference):
    images, logits = reference
    out = load(FIXTURES / "mlp_int8.onnx").logits(images)
    assert (out.argmax(1) == logits.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("name", ["mlp_int8.tflite", "mlp_fp32.onnx"])
def test_any_batch_size(name, test_split):
    runtime = load(FIXTURES / name, num_threads=1)
    runtime.max_batch = 64  # force chunking
    images = test_split[0][:150]
    full = runtime.logits(images)
    np.testing.assert_allclose(runtime.logits(images[:1]), full[:1], atol=1e-5)
    np.testing.assert_allclose(runtime.logits(images[7:14]), full[7:14], atol=1e-5)
    assert runtime.logits(images[:0]).shape == (0, 10)


def test_wrong_input_dtype_or_shape_is_refused():
    runtime = load(FIXTURES / "mlp_fp32.onnx")
    with pytest.raises(ValueError, match="uint8"):
        runtime.logits(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        runtime.logits(np.zeros((2, 32, 32), np.uint8))


@pytest.mark.parametrize("name", ["mlp_int8.tflite", "mlp_fp32.onnx"])
def test_truncated_model_names_the_file(name, tmp_path):
    bad = tmp_path / name
    bad.write_bytes((FIXTURES / name).read_bytes()[:3000])
    with pytest.raises(ModelFileError, match=str(bad)):
        load(bad)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_garbage_model_names_the_file(suffix, tmp_path):
    bad = tmp_path / f"garbage{suffix}"
    bad.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelFileError, match="garbage"):  # names the file
        load(bad)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="unsupported model format"):
        load(tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="no such model file"):
        load(tmp_path / "model.onnx")


def test_model_off_contract_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32, 32, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32, 32, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)
    with pytest.raises(ModelFileError, match="not the contract"):
        load(path)


def test_missing_litert_names_the_extra(monkeypatch):
    from fmnist_edge.runtime import litert

    monkeypatch.setattr(litert, "INTERPRETERS", (("no_such_module_x", "Interpreter"),))
    with pytest.raises(ImportError, match=r"fmnist-edge\[litert\]"):
        load(FIXTURES / "mlp_int8.tflite")


def test_runtime_commands_never_import_tensorflow(tmp_path, data_dir):
    """import fmnist_edge.cli, then predict / evaluate / benchmark: no TensorFlow loaded."""
    from PIL import Image

    from fmnist_edge import data

    images, _ = data.load_split("test", data_dir)
    Image.fromarray(images[0]).save(tmp_path / "one.png")
    script = textwrap.dedent(f"""
        import sys
        import fmnist_edge.cli
        from typer.testing import CliRunner
        runner = CliRunner()
        model = {str(FIXTURES / 'mlp_int8.tflite')!r}
        for args in (["predict", {str(tmp_path / 'one.png')!r}, "--model", model],
                     ["predict", {str(tmp_path / 'one.png')!r},
                      "--model", {str(FIXTURES / 'mlp_int8.onnx')!r}],
                     ["evaluate", model, "--data-dir", {str(data_dir)!r}],
                     ["benchmark", model, "--runs", "5", "--data-dir", {str(data_dir)!r}]):
            result = runner.invoke(fmnist_edge.cli.app, args)
            assert result.exit_code == 0, (args, result.output)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("tensorflow", "tf_keras", "keras", "tf2onnx"))
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout, out.stdout


@pytest.mark.parametrize("dtype,zero_point", [(np.int8, -128), (np.uint8, 0), (np.int8, -3)])
def test_integer_fast_path_is_exact(dtype, zero_point):
    from fmnist_edge.runtime.quant import quantize_input, quantize_pixels

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    fast = quantize_pixels(pixels, np.dtype(dtype), 1.0, zero_point)
    slow = quantize_input(pixels[..., None].astype(np.float32), np.dtype(dtype), 1.0,
                          zero_point)
    assert fast.dtype == dtype and fast.shape == (1, 16, 16, 1)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("dtype,scale,zero_point", [(np.int8, 0.1734, -7), (np.uint8, 0.05, 131),
                                                    (np.int16, 0.001, 0)])
def test_output_dequantization_is_the_spec_formula_for_every_code(dtype, scale, zero_point):
    from fmnist_edge.runtime.quant import output_dequantizer

    info = np.iinfo(dtype)
    codes = np.array([info.min, -1, 0, 1, info.max], dtype) if info.bits > 8 else \
        np.arange(256, dtype=np.uint8).view(dtype)
    codes = codes.reshape(-1, 1)
    got = output_dequantizer(np.dtype(dtype), scale, zero_point)(codes)
    want = (codes.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    assert got.dtype == np.float32 and got.shape == codes.shape
    np.testing.assert_array_equal(got, want)  # bit for bit


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -0.5])
def test_integer_output_with_a_broken_scale_is_refused(tmp_path, scale):
    """A full-integer model whose output scale is not a positive finite number is refused at
    load, naming the file (by XNNPACK or, without it, by the runtime's own check): its
    logits are not checked for NaN per call."""
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as schema

    source = FIXTURES / "mlp_int8.tflite"
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(source.read_bytes(), 0))
    graph = model.subgraphs[0]
    graph.tensors[graph.outputs[0]].quantization.scale = [scale]
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    broken = tmp_path / "broken_scale.tflite"
    broken.write_bytes(bytes(builder.Output()))
    with pytest.raises(ModelFileError, match=r"broken_scale\.tflite: .*scale"):
        load(broken, verify=False)


def test_tflite_card_is_read_from_the_file_without_its_sidecar(tmp_path):
    import shutil

    shipped = Path(__file__).resolve().parents[1] / "fmnist_edge" / "models"
    bare = tmp_path / "copied.tflite"
    shutil.copy(shipped / "default_int8.tflite", bare)  # embedded card, no sidecar
    card = load(bare).card
    assert card.format == "tflite-int8" and card.labels[9] == "Ankle boot"
    assert card.source_run.startswith("runs/cnn/")
    assert load(FIXTURES / "mlp_int8.tflite").card.format  # no embedded card: still a card


def test_tflite_size_breakdown_accounts_for_every_byte(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tflite_size.py"
    spec = importlib.util.spec_from_file_location("tflite_size", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    int8 = module.breakdown(FIXTURES / "mlp_int8.tflite")
    fp32 = module.breakdown(FIXTURES / "mlp_fp32.tflite")
    assert int8["constant_bytes_by_type"]["int8"] > 0 and int8["per_channel_tensors"] > 0
    assert fp32["quantization_params"] == 0 and "int8" not in fp32["constant_bytes_by_type"]
    for b in (int8, fp32):
        parts = sum(b["constant_bytes_by_type"].values()) + b["quantization_param_bytes"]
        assert 0 < b["other_bytes"] < 0.1 * b["file_bytes"] and parts < b["file_bytes"]
    (tmp_path / "x.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        module.breakdown(tmp_path / "x.tflite")
