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

__all__ = ["tf", "keras"]
