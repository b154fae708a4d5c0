"""The one door to Keras.

tensorflow-model-optimization works only with Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is first imported, and every module uses ``tf_keras`` through here. Nothing
else in the project imports ``keras`` or ``tf.keras``.
"""

from __future__ import annotations

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise RuntimeError(
        "TensorFlow was imported before fmnist_edge.train set TF_USE_LEGACY_KERAS=1; "
        "import fmnist_edge.train (or set TF_USE_LEGACY_KERAS=1) before tensorflow"
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fmnist_edge.quiet import quiet_native_stderr  # noqa: E402

with quiet_native_stderr():  # oneDNN / CUDA notes printed before absl logging exists
    import tensorflow as tf
    import tf_keras as keras

    tf.config.list_physical_devices("GPU")  # the CUDA probe logs here, once

__all__ = ["tf", "keras", "float32_model", "load_model", "with_policy"]


def _other_policy(model: keras.Model, policy: str) -> bool:
    return any(_other_policy(layer, policy) if isinstance(layer, keras.Model)
               else layer.dtype_policy.name != policy for layer in model.layers)


def with_policy(model: keras.Model, policy: str) -> keras.Model:
    """``model`` rebuilt layer by layer (nested models too) under the Keras dtype policy
    ``policy`` (``float32``, ``mixed_bfloat16`` or ``mixed_float16``), with the same float32
    weights; a model already under ``policy`` is returned as it is.

    Raises:
        ValueError: ``policy`` is not a Keras dtype policy name.
    """
    if not _other_policy(model, policy):
        return model

    def clone(layer):
        if isinstance(layer, keras.Model):
            return with_policy(layer, policy)
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def float32_model(model: keras.Model) -> keras.Model:
    """``model``, computing in float32.

    A model trained with ``--mixed-precision`` keeps its layers' policy when saved
    (``mixed_bfloat16``: bfloat16 compute over float32 variables, Keras' mixed precision
    guide), and the TFLite and ONNX converters reject its bfloat16 graph. Such a model is
    rebuilt as float32 layers with the same weights (:func:`with_policy`), which are float32
    already: evaluation, export and distillation then see the float model. A float32 model
    is returned as it is.
    """
    return with_policy(model, "float32")


def load_model(path) -> keras.Model:
    """A saved ``.keras`` model (not compiled), computing in float32 (:func:`float32_model`).

    Raises:
        whatever ``keras.models.load_model`` raises for an unreadable file.
    """
    return float32_model(keras.models.load_model(path, compile=False))
