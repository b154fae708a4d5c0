"""The architecture builders. The registry (name -> builder, default recipe, backbone flag)
is :data:`fmnist_edge.train.config.ARCHITECTURES`; :func:`build` builds an entry.

Every builder returns an *uncompiled* ``tf_keras.Model`` honouring the contract of
``fmnist_edge.contract``: input ``float32[N, 28, 28, 1]`` of raw pixel values 0-255 (the
normalisation is inside the model), output ``float32[N, 10]`` logits in canonical label order.

``keras.applications`` backbones are built *flat* (``input_tensor=``), never nested as a
sub-model: tfmot can neither prune nor quantize a model inside a model
(tensorflow/model-optimization#957).
"""

from __future__ import annotations

from pathlib import Path

from fmnist_edge.contract import (
    FMNIST_PIXEL_MEAN,
    FMNIST_PIXEL_STD,
    IMAGE_SIZE,
    NUM_CLASSES,
)
from fmnist_edge.train.config import ARCHITECTURES
from fmnist_edge.train.keras_shim import keras

layers = keras.layers

INPUT_NAME = "pixels"
LOGITS_NAME = "logits"


def _input() -> keras.Input:
    return keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype="float32", name=INPUT_NAME)


def _fmnist_normalization() -> layers.Layer:
    """Standardise raw 0-255 pixels with the Fashion-MNIST training-set mean and std."""
    return layers.Normalization(
        mean=FMNIST_PIXEL_MEAN, variance=FMNIST_PIXEL_STD**2, name="normalize"
    )


def _logits(x, dropout: float, regularizer=None):
    if dropout > 0:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    # float32 output even under a mixed_float16 policy.
    return layers.Dense(NUM_CLASSES, dtype="float32", kernel_regularizer=regularizer,
                        name=LOGITS_NAME)(x)


def build_mlp(*, hidden: tuple[int, ...] = (512, 128), dropout: float = 0.2,
              l2: float = 0.0) -> keras.Model:
    """The seed's multilayer perceptron.

    Flatten, then per hidden width: Dense + BatchNorm + ReLU + Dropout, then Dense(10) logits.

    Args:
        hidden: widths of the hidden Dense layers.
        dropout: dropout rate after each hidden block.
        l2: L2 penalty on the Dense kernels (0 disables it).
    """
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = _input()
    x = _fmnist_normalization()(inputs)
    x = layers.Flatten(name="flatten")(x)
    for i, width in enumerate(hidden, start=1):
        x = layers.Dense(width, use_bias=False, kernel_regularizer=reg, name=f"dense{i}")(x)
        x = layers.BatchNormalization(name=f"dense{i}_bn")(x)
        x = layers.ReLU(name=f"dense{i}_relu")(x)
        x = layers.Dropout(dropout, name=f"dense{i}_dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, dtype="float32", name=LOGITS_NAME)(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(*, widths: tuple[int, ...] = (32, 64, 128), dropout: float = 0.3,
              l2: float = 0.0, stem_stride: int = 1, name: str = "cnn") -> keras.Model:
    """Compact edge CNN (fmnist-edge's own design), about 290K parameters.

    Three VGG-style stages of two 3x3 Conv2D + BatchNorm + ReLU each (28x28, 14x14, 7x7),
    2x2 max-pooling between stages, global average pooling and a Dense(10) head. Only ops
    with exact int8 kernels in TFLite and onnxruntime (Conv2D with folded BatchNorm, ReLU,
    MaxPool, Mean, FullyConnected), no depthwise convolutions, which lose more accuracy under
    per-tensor quantization (Krishnamoorthi 2018, arXiv:1806.08342, sec. 3).

    Args:
        widths: filters of the stages.
        dropout: dropout rate before the classifier.
        l2: L2 penalty on conv/dense kernels (0 disables it).
        stem_stride: stride of the first convolution: 2 runs the first stage at 14x14
            (the 28x28 layers dominate batch-1 latency at small widths).
        name: model name.
    """
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = _input()
    x = _fmnist_normalization()(inputs)
    for stage, width in enumerate(widths, start=1):
        if stage > 1:
            x = layers.MaxPooling2D(2, name=f"pool{stage - 1}")(x)
        for j in (1, 2):
            tag = f"conv{stage}_{j}"
            stride = stem_stride if (stage, j) == (1, 1) else 1
            x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                              kernel_regularizer=reg, name=tag)(x)
            x = layers.BatchNormalization(name=f"{tag}_bn")(x)
            x = layers.ReLU(name=f"{tag}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _logits(x, dropout), name=name)


def build_resnet(*, blocks: int = 3, widths: tuple[int, ...] = (16, 32, 64),
                 dropout: float = 0.0, l2: float = 0.0, name: str = "resnet20",
                 stem_stride: int = 1) -> keras.Model:
    """CIFAR-style ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition",
    arXiv:1512.03385, sec. 4.2) on 28x28 input: a 3x3 convolution, then three stages of
    ``blocks`` basic blocks (two 3x3 Conv2D + BatchNorm, ReLU) with ``widths`` filters, the
    second and third stage starting with stride 2 (28 -> 14 -> 7); identity shortcuts, a 1x1
    convolution + BatchNorm where the shape changes (option B of the paper); global average
    pooling and a Dense(10) head. ``blocks=3`` is ResNet-20 (6n + 2 layers, about 0.27M
    parameters), ``blocks=1`` ResNet-8.

    Args:
        blocks: basic blocks per stage (n in 6n + 2).
        widths: filters of the three stages.
        dropout: dropout rate before the classifier.
        l2: L2 penalty on conv/dense kernels (0 disables it).
        name: model name.
        stem_stride: stride of the stem convolution (2: stages at 14, 7 and 4 pixels).
    """
    reg = keras.regularizers.L2(l2) if l2 > 0 else None

    def conv_bn(x, filters, kernel, stride, tag):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_regularizer=reg, name=tag)(x)
        return layers.BatchNormalization(name=f"{tag}_bn")(x)

    inputs = _input()
    x = _fmnist_normalization()(inputs)
    x = layers.ReLU(name="stem_relu")(conv_bn(x, widths[0], 3, stem_stride, "stem"))
    for stage, width in enumerate(widths, start=1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            tag = f"s{stage}b{block}"
            y = layers.ReLU(name=f"{tag}_relu1")(conv_bn(x, width, 3, stride, f"{tag}_conv1"))
            y = conv_bn(y, width, 3, 1, f"{tag}_conv2")
            shortcut = (conv_bn(x, width, 1, stride, f"{tag}_proj")
                        if stride != 1 or x.shape[-1] != width else x)
            x = layers.ReLU(name=f"{tag}_relu2")(layers.Add(name=f"{tag}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _logits(x, dropout, reg), name=name)


#: Per-channel (mean, std) on 0-255 RGB of each keras.applications preprocessing mode
#: (keras.applications `preprocess_input` docs): "tf" scales to [-1, 1]; "caffe" subtracts the
#: ImageNet BGR means (RGB == BGR here, the three channels being equal).
PREPROCESSING = {"tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
                 "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0))}


def build_backbone(application: str, preprocessing: str, *, name: str, input_size: int = 32,
                   weights: str | None = None, dropout: float = 0.2,
                   alpha: float = 1.0) -> keras.Model:
    """A ``keras.applications`` backbone with a new 10-class head, built flat.

    Graph: pixels ``float32[N, 28, 28, 1]`` -> Resizing(input_size, bilinear) -> grayscale
    replicated to 3 channels (Concatenate) -> per-channel Normalization of the backbone's
    ImageNet preprocessing -> backbone (``include_top=False, pooling="avg"``) -> Dropout ->
    Dense(10) logits.

    Args:
        application: the ``keras.applications`` class, e.g. ``MobileNetV2``.
        preprocessing: the input normalisation its weights expect, a key of
            :data:`PREPROCESSING`.
        name: the model's name (its registry key).
        input_size: side in pixels the 28x28 image is resized to (keras.applications needs
            at least 32).
        weights: ``None``/``"none"`` (random init), ``"imagenet"`` (downloaded by
            keras.applications; needs network), or a path to a weights file of the same
            backbone without its top (``include_top=False``), e.g. keras.applications'
            ``*_notop.h5``.
        dropout: dropout rate before the classifier.
        alpha: width multiplier (MobileNetV2 only).

    Raises:
        ValueError: ``input_size`` below 32.
        FileNotFoundError: ``weights`` names a file that does not exist.
    """
    if input_size < 32:
        raise ValueError(f"input_size must be >= 32 for keras.applications, got {input_size}")
    app_name, (mean, std) = application, PREPROCESSING[preprocessing]
    if weights in (None, "none", "None"):
        weights = None
    elif weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} not found; pass --weights none, --weights imagenet "
                f"(needs network) or the path of a {app_name} include_top=False weights file"
            )
        weights = str(path)

    inputs = _input()
    x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize")(inputs)
    x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    x = layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                             name="imagenet_normalize")(x)
    kwargs = {"alpha": alpha} if app_name == "MobileNetV2" else {}
    try:
        backbone = getattr(keras.applications, app_name)(
            include_top=False, weights=weights, input_tensor=x, pooling="avg", **kwargs
        )
    except Exception as exc:  # keras' get_file raises a bare Exception when offline
        if weights != "imagenet" or "fetch" not in str(exc).lower():
            raise
        raise FileNotFoundError(
            f"--weights imagenet: the {app_name} ImageNet weights are not in the Keras cache "
            f"(~/.keras/models or $KERAS_HOME/models) and cannot be downloaded here "
            f"({str(exc).splitlines()[0]}); download the include_top=False .h5 file on a "
            "machine with network and pass --weights PATH, or train with --weights none"
        ) from exc
    outputs = _logits(backbone.output, dropout)
    return keras.Model(inputs, outputs, name=name)


#: BatchNorm moving-average momentum for every architecture. Keras defaults to 0.99
#: (MobileNetV2 to 0.999), which lags the weights by hundreds of steps: short or
#: from-scratch runs then evaluate far below their training accuracy. 0.9 is PyTorch's default
#: (momentum 0.1 in its convention).
BN_MOMENTUM = 0.9


def build(name: str, *, bn_momentum: float = BN_MOMENTUM, **kwargs) -> keras.Model:
    """Build the registered architecture ``name`` with keyword hyperparameters.

    Args:
        name: registry key.
        bn_momentum: momentum set on every BatchNormalization layer.
        **kwargs: the builder's hyperparameters.

    Raises:
        ValueError: ``name`` is not registered (the message lists the choices).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    entry = ARCHITECTURES[name]
    model = globals()[entry.builder](**entry.kwargs, **kwargs)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model
