"""What a Keras model looks at: Grad-CAM, input-gradient saliency and feature maps.

Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", arXiv:1610.02391, eq. 1-2): the feature maps ``A`` of the last
convolutional stage are weighted by the spatial mean of ``d logit_c / d A`` and summed,
``ReLU(sum_k w_k A_k)``, then upsampled to 28x28. The last stage is the tensor that global
average pooling reads, so every convolutional architecture of the registry is covered. A
model without convolutions (the MLP) gets the input-gradient saliency map ``|d logit_c / d x|``
(Simonyan et al. 2014, arXiv:1312.6034) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmnist_edge.contract import IMAGE_SIZE
from fmnist_edge.train.keras_shim import keras, tf

_ACTIVATIONS = ("ReLU", "Activation")


@dataclass(frozen=True)
class Explanation:
    """Per image: ``logits`` ``float32[N, 10]``, ``heatmap`` ``float32[N, 28, 28]`` in [0, 1]
    (Grad-CAM, or saliency when ``method`` is ``saliency``), the explained classes
    ``int[N]``, and the first / last convolutional stages' activations
    (``float32[N, h, w, c]``, ``None`` without convolutions)."""

    logits: np.ndarray
    heatmap: np.ndarray
    classes: np.ndarray
    method: str
    first_stage: np.ndarray | None
    last_stage: np.ndarray | None


def last_conv_stage(model: keras.Model):
    """The tensor global average pooling reads (the last convolutional stage), or ``None``."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return layer.input
    return None


def first_conv_stage(model: keras.Model):
    """The first Conv2D's activations: its own output when it applies a nonlinearity itself
    (VGG16), else the output of the activation layer after it (after its BatchNorm); ``None``
    without convolutions."""
    conv = None
    for layer in model.layers:
        if conv is None and isinstance(layer, keras.layers.Conv2D):
            conv = layer
            if getattr(layer.activation, "__name__", "linear") != "linear":
                return layer.output
        elif conv is not None and layer.__class__.__name__ in _ACTIVATIONS:
            return layer.output
    return None if conv is None else conv.output


def explain(model: keras.Model, images: np.ndarray, classes: np.ndarray | None = None
            ) -> Explanation:
    """Grad-CAM (or saliency) of ``uint8[N, 28, 28]`` images for ``classes`` (default: the
    predicted class of each image).

    Returns:
        :class:`Explanation`.
    """
    x = tf.constant(images[..., None].astype(np.float32))
    last, first = last_conv_stage(model), first_conv_stage(model)
    if last is None:
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model(x, training=False)
            chosen = _chosen(logits, classes)
            score = tf.reduce_sum(tf.gather(logits, chosen, batch_dims=1))
        grads = tf.abs(tape.gradient(score, x))[..., 0].numpy()
        return Explanation(logits.numpy(), _normalise(grads), chosen.numpy(), "saliency",
                           None, None)
    probe = keras.Model(model.inputs, [last, first, model.output])
    with tf.GradientTape() as tape:
        feats, first_feats, logits = probe(x, training=False)
        chosen = _chosen(logits, classes)
        score = tf.reduce_sum(tf.gather(logits, chosen, batch_dims=1))
    grads = tape.gradient(score, feats)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # w_k^c, eq. 1
    cam = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1))    # eq. 2
    cam = tf.image.resize(cam[..., None], (IMAGE_SIZE, IMAGE_SIZE), method="bilinear")
    return Explanation(logits.numpy(), _normalise(cam[..., 0].numpy()), chosen.numpy(),
                       "gradcam", first_feats.numpy(), feats.numpy())


def _chosen(logits, classes):
    if classes is None:
        return tf.argmax(logits, axis=1, output_type=tf.int32)
    return tf.constant(np.asarray(classes, np.int32))


def _normalise(maps: np.ndarray) -> np.ndarray:
    top = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    return (maps / np.where(top > 0, top, 1.0)).astype(np.float32)


def peak_inside_object(heatmap: np.ndarray, images: np.ndarray, threshold: int = 16
                       ) -> np.ndarray:
    """``bool[N]``: whether each heat map's maximum lies on the object (pixels above
    ``threshold``, i.e. not the black background)."""
    flat = heatmap.reshape(len(heatmap), -1).argmax(axis=1)
    return images.reshape(len(images), -1)[np.arange(len(images)), flat] > threshold
