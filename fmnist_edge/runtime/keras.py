"""Keras (.keras) models through TensorFlow, for parity checks on a training machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmnist_edge.contract import ModelCard, check_images
from fmnist_edge.runtime.base import ModelFileError, batched, check_io


class KerasRuntime:
    """A ``.keras`` model; needs ``pip install "fmnist-edge[train]"``."""

    def __init__(self, path: str | Path, *, num_threads: int | None = None):
        self.path = Path(path)
        try:
            from fmnist_edge.train.keras_shim import load_model, tf
        except ImportError as exc:
            raise ImportError(f"{self.path}: .keras models need TensorFlow: "
                              'pip install "fmnist-edge[train]"') from exc
        if num_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(num_threads)
            except RuntimeError:
                pass  # already initialised: keep the process-wide setting
        try:
            self.model = load_model(self.path)
        except Exception as exc:  # Keras raises a zoo of types for bad archives
            raise ModelFileError(f"{self.path}: not a readable Keras model ({exc}); "
                                 "re-export or re-train it") from exc
        check_io(self.path, self.model.input_shape, self.model.output_shape)
        self.card = _card_for(self.path)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, 28, 28] -> float32[N, 10] logits."""
        images = check_images(images, source=str(self.path))

        def run(batch: np.ndarray) -> np.ndarray:
            x = batch[..., None].astype(np.float32)
            return np.asarray(self.model.predict(x, batch_size=512, verbose=0),
                              dtype=np.float32)

        return batched(images, len(images) or 1, run, source=str(self.path))


def _card_for(path: Path) -> ModelCard:
    from fmnist_edge.runs import Run

    metrics = Run(path.parent).metrics
    accuracy = None
    if metrics.is_file():
        try:
            accuracy = json.loads(metrics.read_text()).get("top1_accuracy")
        except (OSError, ValueError, AttributeError):
            accuracy = None  # the card is metadata: a broken metrics.json does not matter
    return ModelCard(name=path.parent.parent.name if metrics.is_file() else path.stem,
                     format="keras", source_run=str(path.parent), test_accuracy=accuracy)
