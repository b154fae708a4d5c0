"""Per-layer int8 weight granularity (ai-edge-quantizer) and BatchNorm folding, on small
models built here and real test images."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def test_per_tensor_error_ratio():
    from fmnist_edge.export.granularity import per_tensor_error_ratio

    even = np.ones((4, 3, 3, 2), np.float32)
    assert per_tensor_error_ratio(even) == pytest.approx(1.0)
    uneven = even.copy()
    uneven[0] *= 2  # ranges 2, 1, 1, 1: 4 / mean(4, 1, 1, 1)
    assert per_tensor_error_ratio(uneven) == pytest.approx(4 / 1.75)
    uneven[1] = 0  # an all-zero (pruned) channel has no step of its own
    assert per_tensor_error_ratio(uneven) == pytest.approx(4 / 2)
    assert per_tensor_error_ratio(np.zeros((3, 5))) == 1.0


@pytest.fixture(scope="module")
def mixed_model():
    """Conv 'even' (equal channel ranges), conv 'uneven' (one channel 30x wider), a depthwise
    conv and a Dense, as a float TFLite model."""
    from fmnist_edge.export import convert
    from fmnist_edge.train.keras_shim import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="even")(inputs / 255.0)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="uneven")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    even = model.get_layer("even")
    kernel, bias = even.get_weights()
    even.set_weights([np.sign(kernel) * 0.2 + kernel * 1e-3, bias])  # every channel ~0.2
    uneven = model.get_layer("uneven")
    kernel, bias = uneven.get_weights()
    kernel[..., 0] *= 30
    uneven.set_weights([kernel, bias])
    return model, convert.to_tflite(model, "fp32")


def test_plan_puts_even_layers_per_tensor_and_keeps_depthwise_per_channel(mixed_model):
    from fmnist_edge.export import granularity

    _, blob = mixed_model
    plan = granularity.plan(blob, "auto")
    assert len(plan.error_ratio) == 3  # even, uneven, logits; the depthwise conv is not listed
    # ops are named by their output tensor; the model output is named by its signature
    by_layer = {next((k for k in ("even", "uneven") if f"/{k}/" in name), "logits"): name
                for name in plan.error_ratio}
    assert by_layer["even"] in plan.per_tensor and by_layer["uneven"] in plan.per_channel
    assert plan.error_ratio[by_layer["uneven"]] > granularity.MAX_ERROR_RATIO
    assert granularity.plan(blob, "channel").per_tensor == []
    assert len(granularity.plan(blob, "tensor").per_tensor) == 3
    with pytest.raises(ValueError, match="granularity"):
        granularity.plan(blob, "block")


def test_quantize_int8_follows_the_plan_and_keeps_predictions(mixed_model, test_split,
                                                              tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from fmnist_edge.export import granularity
    from fmnist_edge.runtime import load

    _, blob = mixed_model
    images = test_split[0][:300]
    plan = granularity.plan(blob, "auto")
    int8 = tmp_path / "int8.tflite"
    int8.write_bytes(granularity.quantize_int8(blob, images[:100], plan))
    # Read the file as stored: XNNPACK rewrites per-tensor FULLY_CONNECTED weights into
    # per-channel ones in memory.
    stored = Interpreter(str(int8), experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    stored.allocate_tensors()
    details = {t["index"]: t for t in stored.get_tensor_details()}
    assert stored.get_input_details()[0]["dtype"] == np.int8
    scales = {}
    for op in stored._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            weights = details[op["inputs"][1]]
            assert weights["dtype"] == np.int8
            scales[op["op_name"], len(weights["quantization_parameters"]["scales"])] = 1
    # even conv and logits per-tensor (1 scale), uneven conv 32 scales, depthwise 16 scales
    assert set(scales) == {("CONV_2D", 1), ("CONV_2D", 32), ("DEPTHWISE_CONV_2D", 16),
                           ("FULLY_CONNECTED", 1)}
    float_path = tmp_path / "fp32.tflite"
    float_path.write_bytes(blob)
    agreement = (load(int8).logits(images).argmax(1)
                 == load(float_path).logits(images).argmax(1)).mean()
    assert agreement > 0.9


def test_calibration_methods_set_the_activation_ranges(mixed_model, test_split):
    """minmax: the int8 logits cover every calibration image's float logits (global min/max);
    moving_average: a convex combination of per-image ranges, so strictly inside them."""
    from ai_edge_litert.interpreter import Interpreter

    from fmnist_edge.export import granularity

    _, blob = mixed_model
    images = test_split[0][:100]
    plan = granularity.plan(blob, "auto")
    float_logits = Interpreter(model_content=blob)
    runner = float_logits.get_signature_runner()
    (name,) = runner.get_input_details()
    logits = np.concatenate([next(iter(runner(**{name: im[None, ..., None].astype(np.float32)})
                                       .values())) for im in images])

    def output_range(method: str) -> tuple[float, float, float]:
        int8 = Interpreter(model_content=granularity.quantize_int8(blob, images, plan, method))
        scale, zero_point = int8.get_output_details()[0]["quantization"]
        in_scale, in_zero = int8.get_input_details()[0]["quantization"]
        if method == "minmax":  # pixels 0..255 over the whole set: scale 1, zero point -128
            assert (in_scale, in_zero) == (pytest.approx(1.0, rel=1e-6), -128)
        return scale * (-128 - zero_point), scale * (127 - zero_point), scale

    low, high, step = output_range("minmax")
    assert low <= min(logits.min(), 0) + step and high >= logits.max() - step
    assert high - low <= (max(logits.max(), 0) - min(logits.min(), 0)) * 1.01 + step
    ema_low, ema_high, _ = output_range("moving_average")
    assert ema_high - ema_low < high - low
    with pytest.raises(ValueError, match="calibration_method"):
        granularity.quantize_int8(blob, images, plan, "entropy")


def test_fold_batchnorm_keeps_the_function_and_moves_the_scale_into_the_kernel(test_split):
    from fmnist_edge.export.compress import fold_batchnorm
    from fmnist_edge.train.keras_shim import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs / 255.0)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(keras.layers.ReLU()(x))
    x = keras.layers.BatchNormalization(name="dw_bn")(x)  # after depthwise: not folded
    x = keras.layers.Conv2D(8, 1, activation="relu", name="conv_relu")(x)
    x = keras.layers.BatchNormalization(name="relu_bn")(x)  # after an activation: not folded
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    rng = np.random.default_rng(0)
    for name in ("bn", "dw_bn", "relu_bn"):
        layer = model.get_layer(name)
        layer.set_weights([rng.uniform(0.5, 3, 8).astype(np.float32),
                           rng.normal(size=8).astype(np.float32),
                           rng.normal(size=8).astype(np.float32),
                           rng.uniform(0.1, 4, 8).astype(np.float32)])
    folded = fold_batchnorm(model)
    images = test_split[0][:64, ..., None].astype(np.float32)
    np.testing.assert_allclose(folded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-4)
    assert folded.get_layer("conv").use_bias and not folded.get_layer("bn").trainable
    assert folded.get_layer("dw_bn").trainable  # only BatchNorm after Conv2D/Dense folds
    assert folded.get_layer("relu_bn").trainable
    np.testing.assert_array_equal(folded.get_layer("conv_relu").kernel.numpy(),
                                  model.get_layer("conv_relu").kernel.numpy())
    gamma, _, _, var = model.get_layer("bn").get_weights()
    np.testing.assert_allclose(
        folded.get_layer("conv").kernel.numpy(),
        model.get_layer("conv").kernel.numpy() * gamma / np.sqrt(var + 1e-3), rtol=1e-5)
