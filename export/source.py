"""The float Keras model an export starts from."""

from __future__ import annotations

import json
from pathlib import Path

from fmnist_edge.runtime import ModelFileError
from fmnist_edge.runtime.base import check_io
from fmnist_edge.train.keras_shim import keras, load_model


def saved_keras_version(path: Path) -> str | None:
    """The Keras version a ``.keras`` archive records in its ``metadata.json`` (``None`` when
    it is not such an archive)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json")).get("keras_version"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def load_keras(path: Path) -> keras.Model:
    """Load a tf_keras model that honours the contract.

    Raises:
        ModelFileError: saved by Keras 3, unreadable, or another input/output shape.
    """
    version = saved_keras_version(path)
    if version and version.split(".")[0] != keras.__version__.split(".")[0]:
        raise ModelFileError(
            f"{path}: saved with Keras {version}; fmnist-edge exports tf_keras "
            f"{keras.__version__} models (tfmot's pruning and QAT need Keras 2). Fix: build "
            "and save the model with `import tf_keras as keras` (or train it with "
            "`fmnist-edge train`), then export that file")
    try:
        model = load_model(path)
    except Exception as exc:  # Keras raises many types for bad archives
        raise ModelFileError(f"{path}: not a readable Keras model ({exc}); "
                             "train again or pass another run") from exc
    check_io(path, model.input_shape, model.output_shape)
    return model
