"""Every registry entry honours the contract: uint8[N, 28, 28] pixels -> float32[N, 10]."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf

ARCHS = ["mlp", "cnn", "resnet20", "resnet8", "edgecnn", "edgecnn48", "mobilenetv2", "resnet50",
         "vgg16"]


@pytest.fixture(scope="module")
def arch_module():
    from fmnist_edge.train import architectures

    return architectures


def test_registry_lists_every_architecture(arch_module):
    assert sorted(arch_module.ARCHITECTURES) == sorted(ARCHS)


@pytest.mark.parametrize("name", ARCHS)
def test_contract(arch_module, name, test_split):
    model = arch_module.build(name)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    images = test_split[0][:3]
    logits = model(images[..., None].astype(np.float32), training=False).numpy()
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    # Logits, not probabilities: rows need not sum to 1 and may be negative.
    assert not np.allclose(logits.sum(axis=1), 1.0)


def test_resnet20_is_he_et_als_cifar_network(arch_module):
    model = arch_module.build("resnet20")
    convs = [layer for layer in model.layers
             if layer.__class__.__name__ == "Conv2D" and "proj" not in layer.name]
    assert len(convs) + 1 == 20  # 19 3x3 convolutions and the classifier
    assert 265_000 <= model.count_params() <= 275_000
    assert model.get_layer("gap").input_shape[1:] == (7, 7, 64)


def test_resnet8_is_an_edge_model(arch_module):
    model = arch_module.build("resnet8")
    assert model.count_params() <= 100_000  # int8 weights under 100 KB with room for metadata


@pytest.mark.parametrize("name", ["edgecnn", "edgecnn48"])
def test_edge_models_are_within_the_edge_budget(arch_module, bench_script, name):
    """Issue #16's edge model: at most 10 MMAC per image and few enough parameters for an
    int8 TFLite under 100 KB (the int8 TFLite takes about 1.11 bytes per parameter:
    edgecnn's 66,218 -> 73,656 bytes); its first convolution halves the resolution."""
    model = arch_module.build(name)
    assert model.name == name
    assert bench_script("zoo").count_macs(model) <= 10_000_000
    assert model.count_params() <= 90_000
    assert model.get_layer("conv1_1").output_shape[1:3] == (14, 14)
    assert model.get_layer("gap").input_shape[1:] == (7, 7, 64)


def test_distillation_fit_runs_and_records_its_teacher(data_dir, tmp_path):
    """Two epochs of ResNet-8 on 2,000 real images, taught by a 1-epoch MLP run."""
    import json

    from fmnist_edge.train import trainer
    from fmnist_edge.train.config import recipe

    teacher = trainer.train(recipe("mlp", epochs=1, train_limit=2000, val_size=500),
                            data_dir=data_dir, runs_dir=tmp_path, verbose=0).run_dir
    student = trainer.train(
        recipe("resnet8", epochs=2, train_limit=2000, val_size=500, teacher=str(teacher),
               distill_temperature=4.0, distill_alpha=0.9),
        data_dir=data_dir, runs_dir=tmp_path, verbose=0)
    config = json.loads((student.run_dir / "config.json").read_text())
    assert config["teacher"] == str(teacher) and config["distill_alpha"] == 0.9
    history = json.loads((student.run_dir / "history.json").read_text())
    assert len(history) == 2 and history[-1]["val_accuracy"] > 0.3
    assert student.metrics["top1_accuracy"] > 0.3


def test_teachers_load_in_float32_or_mixed_precision_and_give_float32_soft_targets(
        arch_module, test_split, tmp_path):
    """--teacher-mixed-precision: the teacher computes in bfloat16 (float32 weights), its
    soft targets stay float32 and close to the float32 teacher's."""
    from fmnist_edge.train import trainer
    from fmnist_edge.train.keras_shim import keras

    path = tmp_path / "teacher.keras"
    keras.utils.set_random_seed(0)
    model = arch_module.build("cnn")
    head = model.layers[-1]
    head.set_weights([w * 300 for w in head.get_weights()])  # confident, far from uniform
    model.save(path)
    (plain,) = trainer.load_teachers(str(path))
    (mixed,) = trainer.load_teachers(str(path), mixed_precision=True)
    assert {layer.compute_dtype for layer in plain.layers} == {"float32"}
    assert "bfloat16" in {layer.compute_dtype for layer in mixed.layers}
    x = test_split[0][:128, ..., None].astype(np.float32)
    y = np.eye(10, dtype=np.float32)[test_split[1][:128]]
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    targets = {name: np.concatenate([t.numpy() for _, t in trainer.with_teacher_targets(
        ds, [model], temperature=4.0)]) for name, model in (("plain", plain), ("mixed", mixed))}
    for t in targets.values():
        assert t.dtype == np.float32 and t.shape == (128, 20)
        np.testing.assert_array_equal(t[:, :10], y)
        np.testing.assert_allclose(t[:, 10:].sum(axis=1), 1.0, rtol=1e-5)
    assert np.median(targets["plain"][:, 10:].max(axis=1)) > 0.2  # uniform: 0.1
    np.testing.assert_allclose(targets["mixed"][:, 10:], targets["plain"][:, 10:], atol=0.02)


def test_cnn_is_compact(arch_module):
    assert arch_module.build("cnn").count_params() <= 300_000


def test_mlp_is_the_seed_network(arch_module):
    model = arch_module.build("mlp")
    dense = [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert dense == [512, 128, 10]
    assert sum(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers) == 2


def test_unknown_name_lists_choices(arch_module):
    with pytest.raises(ValueError, match=r"unknown architecture 'lenet'.*'cnn'"):
        arch_module.build("lenet")


def test_backbones_are_flat_and_resized(arch_module):
    model = arch_module.build("mobilenetv2", input_size=48)
    # Flat: no nested Model among the layers (tfmot cannot quantize nested models).
    assert not any(hasattr(layer, "layers") for layer in model.layers)
    assert model.get_layer("resize").output_shape == (None, 48, 48, 1)
    assert model.get_layer("gray_to_rgb").output_shape == (None, 48, 48, 3)


def test_input_size_below_32_is_refused(arch_module):
    with pytest.raises(ValueError, match=">= 32"):
        arch_module.build("vgg16", input_size=28)


def test_missing_weights_file_names_it(arch_module, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        arch_module.build("mobilenetv2", weights=str(tmp_path / "nope.h5"))


def test_weights_file_route_loads_the_backbone(arch_module, tmp_path):
    """The --weights PATH route: a keras.applications no-top weights file, made here."""
    from fmnist_edge.train.keras_shim import keras

    keras.utils.set_random_seed(7)
    donor = keras.applications.MobileNetV2(include_top=False, weights=None,
                                           input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "mobilenet_v2_notop.h5"
    donor.save_weights(str(path))
    keras.utils.set_random_seed(8)
    model = arch_module.build("mobilenetv2", weights=str(path))
    fresh = arch_module.build("mobilenetv2", weights="none")
    for layer_name in ("Conv1", "block_16_project", "Conv_1"):
        loaded = model.get_layer(layer_name).get_weights()[0]
        np.testing.assert_array_equal(loaded, donor.get_layer(layer_name).get_weights()[0])
        assert not np.array_equal(loaded, fresh.get_layer(layer_name).get_weights()[0])


@pytest.mark.parametrize("name", ARCHS)
def test_explain_covers_every_architecture(arch_module, name, test_split):
    from fmnist_edge.train.explain import explain

    found = explain(arch_module.build(name), test_split[0][:2])
    assert found.heatmap.shape == (2, 28, 28) and np.isfinite(found.heatmap).all()
    assert 0 <= found.heatmap.min() and found.heatmap.max() <= 1
    if name == "mlp":
        assert found.method == "saliency" and found.first_stage is None
    else:
        assert found.method == "gradcam" and found.last_stage.ndim == 4


def test_edge_candidates_converts_a_candidate_untrained(bench_script, test_split, tmp_path):
    """benchmarks/edge_candidates.py: a spec parses into registry name and builder
    arguments, and a candidate becomes an int8 TFLite and an int8 ONNX with its MACs."""
    script = bench_script("edge_candidates")
    assert script.parse("edgecnn") == ("edgecnn", "edgecnn", {})
    assert script.parse("half=cnn:widths=16,32,64;stem_stride=2") == (
        "half", "cnn", {"widths": (16, 32, 64), "stem_stride": 2})
    with pytest.raises(ValueError, match="KEY=INT"):
        script.parse("cnn:widths=wide")
    images = test_split[0][:200]
    record = script.convert("edge", "edgecnn", {}, images, images[:50], tmp_path)
    tflite, onnx_file = record["files"]
    assert tflite.is_file() and onnx_file.is_file()
    assert 4_000_000 < record["macs_per_image"] <= script.MAX_MACS
    assert record["tflite_int8_bytes"] <= script.MAX_TFLITE_BYTES


def test_conv_cost_probe_differs_from_its_baseline_by_one_convolution(bench_script, tmp_path,
                                                                      test_split):
    from fmnist_edge.export import convert

    script = bench_script("conv_cost")
    with_conv, baseline = script.probe(8, 16), script.probe(8, None)
    convs = [[layer.kernel.shape for layer in m.layers if layer.__class__.__name__ == "Conv2D"]
             for m in (with_conv, baseline)]
    assert convs[0] == convs[1] + [(3, 3, 8, 16)]
    path = tmp_path / "probe.tflite"
    path.write_bytes(convert.to_tflite(with_conv, "int8", test_split[0][:20]))
    (us,) = script.time_files([path], rounds=2, calls=3)
    assert us > 0
