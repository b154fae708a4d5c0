"""Compression with tfmot: magnitude pruning, then (pruning-preserving) quantization-aware
training.

Recipes follow tfmot's guides: "Pruning in Keras" (prune_low_magnitude with PolynomialDecay,
UpdatePruningStep, strip_pruning) and "Pruning preserving quantization aware training"
(Default8BitPrunePreserveQuantizeScheme), tensorflow.org/model_optimization.
"""

from __future__ import annotations

import gzip
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from fmnist_edge.export.config import ALLOCATIONS, OPTIMIZERS
from fmnist_edge.train.config import AugmentConfig
from fmnist_edge.train.dataset import make_dataset
from fmnist_edge.train.keras_shim import keras
from fmnist_edge.train.schedules import WarmupCosine

log = logging.getLogger(__name__)

PRUNABLE = (keras.layers.Conv2D, keras.layers.Dense)
_FOLDED_BY_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@dataclass
class CompressionReport:
    """What compression did, for the manifest."""

    sparsity_target: float = 0.0
    pruned_layers: list[str] = field(default_factory=list)
    dense_layers: list[str] = field(default_factory=list)  # prunable kind, left dense
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # target per kernel
    measured_sparsity: float = 0.0
    quantized_layers: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)  # left float by QAT
    qat_scheme: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


@dataclass(frozen=True)
class Tuning:
    """How compression fine-tunes, resolved once from an ``ExportConfig`` and the run.

    Attributes:
        lr: peak learning rate (cosine-decayed to lr / 100).
        batch_size: fine-tuning batch size.
        optimizer: ``adam``, or ``sgd`` (Nesterov momentum 0.9).
        seed: seed of shuffling and augmentation.
        augment: the run's augmentation (``None``: clean images, as distillation needs).
        label_smoothing: label smoothing of the cross-entropy.
        temperature: softening temperature T of soft targets (1: plain cross-entropy).
        verbose: Keras verbosity.
    """

    lr: float = 1e-4
    batch_size: int = 128
    optimizer: str = "adam"
    seed: int = 0
    augment: AugmentConfig | None = None
    label_smoothing: float = 0.0
    temperature: float = 1.0
    verbose: int = 0

    @classmethod
    def from_config(cls, config, augment: AugmentConfig | None = None,
                    label_smoothing: float = 0.0, verbose: int = 0) -> Tuning:
        """The fine-tuning of ``config`` (an ``ExportConfig``). With ``config.distill`` the
        targets are the float model's outputs on the clean images, so the student sees those
        same clean images (no augmentation, no smoothing) at ``distill_temperature``; label
        training keeps the run's ``augment`` and ``label_smoothing``."""
        if config.distill:
            augment, label_smoothing = None, 0.0
        return cls(lr=config.lr, batch_size=config.batch_size, optimizer=config.optimizer,
                   seed=config.seed, augment=augment, label_smoothing=label_smoothing,
                   temperature=config.distill_temperature if config.distill else 1.0,
                   verbose=verbose)


def fine_tune(model: keras.Model, images: np.ndarray, labels: np.ndarray, tuning: Tuning, *,
              epochs: int, callbacks=()) -> dict[str, list[float]]:
    """Fine-tune ``model`` on ``uint8[N, 28, 28]`` images with ``tuning.optimizer`` (``adam``,
    or ``sgd``: SGD with Nesterov momentum 0.9) at a cosine-decayed ``tuning.lr``. Adam scales
    every step to about ``lr`` whatever the gradient's size, so it also moves weights whose
    gradient is only noise; SGD moves them in proportion to the gradient, which near the
    float model's solution (distillation) is small (Wilson et al. 2017, "The Marginal Value
    of Adaptive Gradient Methods in Machine Learning", arXiv:1705.08292).

    ``labels`` are integer classes ``[N]`` or soft targets ``float32[N, 10]``. With soft
    targets made at temperature T (``softmax(teacher_logits / T)``), the loss is the
    cross-entropy against ``softmax(logits / T)`` scaled by T**2 (Hinton et al. 2015,
    arXiv:1503.02531, sec. 2), which weighs the whole logit vector, not just the top class.

    Returns:
        The Keras history dict (loss, accuracy).

    Raises:
        ValueError: an unknown optimizer.
    """
    steps = math.ceil(len(images) / tuning.batch_size)
    temperature = tuning.temperature
    cross_entropy = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=tuning.label_smoothing)

    def loss(targets, logits):
        return cross_entropy(targets, logits / temperature) * temperature ** 2

    schedule = WarmupCosine(tuning.lr, epochs * steps, 0, tuning.lr / 100)
    if tuning.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {tuning.optimizer!r}; choose from {OPTIMIZERS}")
    model.compile(
        optimizer=(keras.optimizers.Adam(schedule) if tuning.optimizer == "adam" else
                   keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)),
        loss=cross_entropy if temperature == 1.0 else loss,
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    ds = make_dataset(images, labels, batch_size=tuning.batch_size, training=True,
                      augment=tuning.augment, seed=tuning.seed)
    history = model.fit(ds, epochs=epochs, callbacks=list(callbacks), verbose=tuning.verbose)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def kernel_sparsity(model: keras.Model) -> float:
    """Fraction of exactly-zero weights over all Conv2D/Dense kernels."""
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, PRUNABLE):
            kernel = layer.kernel.numpy()
            zeros += int((kernel == 0).sum())
            total += kernel.size
    return zeros / total if total else 0.0


def end_layers(model: keras.Model) -> tuple[str, ...]:
    """Names of the first and the last Conv2D/Dense layer: the input convolution sees every
    pixel through few weights and the classifier writes the logits directly, so both are
    commonly kept dense when pruning (Gale, Elsen & Hooker 2019, "The State of Sparsity in
    Deep Neural Networks", arXiv:1902.09574, sec. 4)."""
    names = [layer.name for layer in model.layers if isinstance(layer, PRUNABLE)]
    return tuple(dict.fromkeys(names[:1] + names[-1:]))


def _producer(layer):
    """The single layer feeding ``layer``, or None."""
    nodes = layer.inbound_nodes
    if not nodes:
        return None
    inbound = nodes[0].inbound_layers
    return inbound if not isinstance(inbound, list) else (inbound[0] if inbound else None)


def freeze_batchnorm(model: keras.Model) -> keras.Model:
    """Keep every BatchNormalization in inference mode during fine-tuning: ``trainable =
    False``, which in Keras 2 also freezes gamma and beta and makes the layer normalise with
    its moving statistics, never the batch's (Keras guide "Transfer learning & fine-tuning",
    "BatchNormalization layer"). Fine-tuning then changes kernels and biases only, never the
    normalisation statistics the float model was trained with
    (benchmarks/results/experiments/README.md).

    Changes ``model`` in place (clones made from it keep the flag) and returns it.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """Fold every BatchNormalization that directly follows a Conv2D/Dense without activation
    (and is that layer's only consumer) into the layer's kernel and bias, as the TFLite
    converter and int8 inference do (Jacob et al. 2018, "Quantization and Training of Neural
    Networks for Efficient Integer-Arithmetic-Only Inference", arXiv:1712.05877, sec. 3.2):
    ``kernel * gamma / sqrt(var + eps)`` per output channel and
    ``(bias - mean) * gamma / sqrt(var + eps) + beta``.

    The folded BatchNormalization layers stay in place as frozen identities (gamma 1, beta 0,
    mean 0, variance 1 - eps), so layer names and the graph are unchanged. Magnitude pruning
    of the folded model then ranks the weights the deployed model multiplies with, not the
    raw kernels, whose per-channel scale the following BatchNorm undoes. Same function:
    predictions equal the input model's to float rounding.

    Returns:
        A new model; ``model`` is not changed.
    """
    folds = {}
    for layer in model.layers:
        source = _producer(layer)
        if (isinstance(layer, keras.layers.BatchNormalization) and isinstance(source, PRUNABLE)
                and source.get_config().get("activation") == "linear"  # BN after the kernel
                and len(source.outbound_nodes) == 1 and layer.axis in ([-1], [len(
                    source.output_shape) - 1])):
            folds[source.name] = layer
    identities = {bn.name for bn in folds.values()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in folds:
            config["use_bias"] = True
        if layer.name in identities:
            config["trainable"] = False
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = folded.get_layer(layer.name)
        if layer.name in folds:
            bn = folds[layer.name]
            params = dict(zip(("gamma", "beta", "mean", "var"), _bn_params(bn)))
            scale = params["gamma"] / np.sqrt(params["var"] + bn.epsilon)
            bias = layer.bias.numpy() if layer.use_bias else 0.0
            target.set_weights([layer.kernel.numpy() * scale,
                                (bias - params["mean"]) * scale + params["beta"]])
        elif layer.name in identities:
            width = layer.moving_mean.shape[0]
            weights = {"gamma": np.ones(width), "beta": np.zeros(width),
                       "moving_mean": np.zeros(width),
                       "moving_variance": np.full(width, 1.0 - layer.epsilon)}
            target.set_weights([weights[w.name.split("/")[-1].split(":")[0]]
                                for w in target.weights])
        else:
            target.set_weights(layer.get_weights())
    return folded


def _bn_params(bn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """gamma, beta, moving mean, moving variance of a BatchNormalization layer (gamma 1 and
    beta 0 when it has no scale / center)."""
    width = bn.moving_mean.shape[0]
    gamma = bn.gamma.numpy() if bn.scale else np.ones(width, np.float32)
    beta = bn.beta.numpy() if bn.center else np.zeros(width, np.float32)
    return gamma, beta, bn.moving_mean.numpy(), bn.moving_variance.numpy()


def layer_sparsities(model: keras.Model, sparsity: float, keep_dense: tuple[str, ...] = (),
                     allocation: str = "uniform") -> dict[str, float]:
    """Target sparsity of every Conv2D/Dense kernel such that all of them together reach
    ``sparsity`` while the ``keep_dense`` layers stay dense (target 0.0).

    ``uniform``: every pruned layer gets the same sparsity. ``erk`` (Erdős–Rényi-Kernel,
    Evci et al. 2020, "Rigging the Lottery", arXiv:1911.11134, sec. 3): a layer's density is
    proportional to ``sum(kernel shape) / prod(kernel shape)``, so large layers are pruned
    more and small ones less; a layer whose density would exceed 1 stays dense and the
    others share the rest.

    Raises:
        ValueError: the dense layers hold too many weights for ``sparsity`` to be reached, or
            ``allocation`` is not one of :data:`ALLOCATIONS`.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose from {ALLOCATIONS}")
    shapes = {layer.name: tuple(int(d) for d in layer.kernel.shape) for layer in model.layers
              if isinstance(layer, PRUNABLE)}
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    score = {name: 1.0 if allocation == "uniform" else sum(shape) / sizes[name]
             for name, shape in shapes.items()}
    keep = (1 - sparsity) * sum(sizes.values())  # weights left non-zero overall
    dense = set(keep_dense) & set(sizes)
    while True:
        free = [name for name in sizes if name not in dense]
        left = keep - sum(sizes[name] for name in dense)
        scale = left / max(sum(score[name] * sizes[name] for name in free), 1e-12)
        saturated = {name for name in free if scale * score[name] >= 1}
        if not saturated or not free:
            break
        dense |= saturated
    if left < 0 or not free:
        raise ValueError(f"cannot reach {sparsity:.0%} sparsity with {sorted(dense)} dense")
    return {name: 0.0 if name in dense else 1 - scale * score[name] for name in sizes}


def prune(model: keras.Model, images: np.ndarray, targets: np.ndarray, tuning: Tuning,
          config, report: CompressionReport) -> keras.Model:
    """Magnitude-prune the Conv2D/Dense kernels to ``config.sparsity`` overall while
    fine-tuning ``config.prune_epochs`` (:func:`fine_tune` with ``tuning`` on
    ``uint8[N, 28, 28]`` images and their ``targets``); ``config`` is an ``ExportConfig``.

    With ``config.keep_ends_dense`` the :func:`end_layers` stay dense and the others are
    pruned to their :func:`layer_sparsities` under ``config.sparsity_allocation``, so the
    kernels together still reach the sparsity; when the end layers hold too many weights for
    that (an MLP's first layer), they are pruned too, with a warning. Each layer's sparsity
    ramps from 0 with tfmot's PolynomialDecay over the first 70 % of the fine-tuning steps,
    then holds. Returns the stripped (plain Keras) model.

    Raises:
        ValueError: ``sparsity`` cannot be reached (see :func:`layer_sparsities`).
    """
    tfmot = _tfmot()
    sp = tfmot.sparsity.keras
    sparsity, epochs = config.sparsity, config.prune_epochs
    allocation = config.sparsity_allocation
    keep_dense = end_layers(model) if config.keep_ends_dense else ()
    steps = epochs * math.ceil(len(images) / tuning.batch_size)
    try:
        layer_targets = layer_sparsities(model, sparsity, keep_dense, allocation)
    except ValueError:
        if not keep_dense:
            raise
        # e.g. an MLP whose first layer holds most of the weights: it has to be pruned.
        log.warning("%s hold too many weights to stay dense at %.0f%% sparsity; pruning "
                    "every layer", ", ".join(keep_dense), 100 * sparsity)
        layer_targets = layer_sparsities(model, sparsity, (), allocation)
    report.layer_sparsity = layer_targets

    def schedule(final: float):
        return sp.PolynomialDecay(initial_sparsity=0.0, final_sparsity=final, begin_step=0,
                                  end_step=max(1, int(0.7 * steps)),
                                  frequency=max(1, steps // 50))

    def wrap(layer):
        if layer_targets.get(layer.name, 1.0) == 0.0:
            report.dense_layers.append(layer.name)
            return layer
        if isinstance(layer, PRUNABLE):
            try:
                wrapped = sp.prune_low_magnitude(layer,
                                                 pruning_schedule=schedule(layer_targets[layer.name]))
                report.pruned_layers.append(layer.name)
                return wrapped
            except (ValueError, TypeError) as exc:
                log.warning("cannot prune %s: %s", layer.name, exc)
                report.dense_layers.append(layer.name)
        return layer

    pruned = keras.models.clone_model(model, clone_function=wrap)
    report.sparsity_target = sparsity
    report.history["prune"] = fine_tune(pruned, images, targets, tuning, epochs=epochs,
                                        callbacks=[sp.UpdatePruningStep()])["accuracy"]
    stripped = sp.strip_pruning(pruned)
    report.measured_sparsity = kernel_sparsity(stripped)
    return stripped


def _annotate_supported(model: keras.Model, registry, report: CompressionReport):
    """Annotate what the scheme can quantize; leave the rest float and record it.

    BatchNormalization directly after a convolution is annotated too: tfmot folds it into the
    convolution (its Conv2D/DepthwiseConv2D + BatchNorm layout transforms).
    """
    tfmot = _tfmot()
    qk = tfmot.quantization.keras

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        folded = (isinstance(layer, keras.layers.BatchNormalization)
                  and isinstance(_producer(layer), _FOLDED_BY_CONV))
        if folded or registry.supports(layer):
            report.quantized_layers.append(layer.name)
            return qk.quantize_annotate_layer(layer)
        report.float_layers.append(layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=annotate)


def _prune_preserve_scheme():
    """Default8BitPrunePreserveQuantizeScheme whose registry's ``supports()`` agrees with
    ``get_quantize_config()``.

    tfmot 0.8.1's prune-preserve registry reports every weightless layer (e.g. Normalization)
    as supported, then delegates to the default 8-bit registry, which rejects it inside
    ``quantize_apply``; here a layer is supported only when both registries support it.
    """
    tfmot = _tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa: E501
        prune_preserve_quantize_registry as pp,
    )

    default_registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme(
    ).get_quantize_registry()

    class Registry(pp.Default8bitPrunePreserveQuantizeRegistry):
        def supports(self, layer):
            return default_registry.supports(layer) and super().supports(layer)

    class Scheme(tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme):
        def get_quantize_registry(self):
            return Registry()

    return Scheme()


def quantize_aware(model: keras.Model, images: np.ndarray, targets: np.ndarray,
                   tuning: Tuning, *, epochs: int, pruned: bool,
                   report: CompressionReport) -> keras.Model:
    """Quantization-aware training: pruning-preserving for pruned models, default 8-bit
    otherwise, fine-tuned ``epochs`` with ``tuning``. Layers the scheme cannot quantize
    (Normalization, Resizing, ...) stay float and are listed in ``report.float_layers``.

    Returns:
        The QAT model (fake-quant nodes inside), ready for the TFLite converter.
    """
    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    if pruned:
        scheme = _prune_preserve_scheme()
        report.qat_scheme = "Default8BitPrunePreserveQuantizeScheme"
    else:
        scheme = qk.default_8bit.Default8BitQuantizeScheme()
        report.qat_scheme = "Default8BitQuantizeScheme"
    annotated = _annotate_supported(model, scheme.get_quantize_registry(), report)
    with qk.quantize_scope():
        qat = qk.quantize_apply(annotated, scheme)
    if epochs:
        report.history["qat"] = fine_tune(qat, images, targets, tuning,
                                          epochs=epochs)["accuracy"]
    return qat


@dataclass
class Compressed:
    """What the compress stage hands to the converters.

    Attributes:
        float_model: the compressed float Keras model (pruned, or the float model itself).
        float_tflite: its fp32 TFLite flatbuffer (input of post-training int8 by
            ai-edge-quantizer, and of the gzip record).
        qat: the quantization-aware model (``None`` when ``qat_epochs`` is 0).
        pruned: whether ``float_model`` was pruned.
        report: what compression did, for the manifest.
        sparsity_gzip: pruned vs dense fp32 TFLite gzip -9 bytes (``None`` unpruned).
    """

    float_model: keras.Model
    float_tflite: bytes
    qat: keras.Model | None
    pruned: bool
    report: CompressionReport
    sparsity_gzip: dict[str, float] | None = None


def compress_model(model: keras.Model, reference: keras.Model, config, data,
                   verbose: int = 0) -> Compressed:
    """Export stage 2: freeze BatchNorm, fold it, prune, then QAT, as ``config`` (an
    ``ExportConfig``) says, fine-tuning on ``data`` (an ``export.data.ExportData``).

    Args:
        model: a fresh copy of the float model (pruning rewrites the layers it wraps).
        reference: the float model; with ``config.distill`` its probabilities on the
            fine-tuning images are the targets (``float32[N, 10]``), else the labels are.
        verbose: Keras verbosity of the fine-tuning epochs.

    Raises:
        ValueError: the sparsity cannot be reached.
    """
    from fmnist_edge.contract import softmax
    from fmnist_edge.export import convert
    from fmnist_edge.train.trainer import predict_logits

    tuning = Tuning.from_config(config, data.augment, data.label_smoothing, verbose)
    targets = (softmax(predict_logits(reference, data.x_train) / tuning.temperature)
               if config.distill else data.y_train)
    report = CompressionReport()
    if config.freeze_batchnorm:
        model = freeze_batchnorm(model)
    pruned = config.sparsity > 0
    if pruned:
        log.info("pruning to %.0f%% sparsity, %d epochs on %d images",
                 100 * config.sparsity, config.prune_epochs, len(data.x_train))
        if config.fold_batchnorm:
            model = fold_batchnorm(model)
        model = prune(model, data.x_train, targets, tuning, config, report)
    float_tflite = convert.to_tflite(model, "fp32")
    gzip_record = None
    if pruned:  # what pruning buys in transport, like for like: gzip of both fp32 TFLites
        pruned_gzip = len(gzip.compress(float_tflite, 9))
        dense_gzip = len(gzip.compress(convert.to_tflite(reference, "fp32"), 9))
        gzip_record = {"pruned_fp32_tflite_gzip_bytes": pruned_gzip,
                       "dense_fp32_tflite_gzip_bytes": dense_gzip,
                       "gzip_ratio": pruned_gzip / dense_gzip}
    qat = None
    if config.qat_epochs:
        log.info("quantization-aware training, %d epochs", config.qat_epochs)
        qat = quantize_aware(model, data.x_train, targets, tuning, epochs=config.qat_epochs,
                             pruned=pruned, report=report)
    return Compressed(model, float_tflite, qat, pruned, report, gzip_record)
