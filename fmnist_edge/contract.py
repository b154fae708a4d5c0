"""The one contract every fmnist-edge model honours, whatever its format.

User level: images ``uint8[N, 28, 28]`` (Fashion-MNIST convention: dark background, bright
object) in; ``float32[N, 10]`` logits out, in the canonical label order of ``LABELS``;
probabilities are computed once, here, by :func:`softmax`.

Inside an artifact: input ``float32[N, 28, 28, 1]`` of raw pixel values 0-255 (normalisation
is inside the model); full-integer models may take int8/uint8 input, whose scale and zero
point the runtime reads from the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Class names in label order (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747, table 1).
LABELS: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(LABELS)
IMAGE_SIZE = 28
#: Shape of one batch of images at the user level: uint8[N, 28, 28].
INPUT_SHAPE = (None, IMAGE_SIZE, IMAGE_SIZE)
#: Shape of the tensor inside an artifact: float32[N, 28, 28, 1], values 0-255.
MODEL_INPUT_SHAPE = (None, IMAGE_SIZE, IMAGE_SIZE, 1)

#: Mean and standard deviation of the 60,000 training images' pixels, in 0-255 units
#: (computed from train-images-idx3-ubyte: 72.9404 and 90.0212).
FMNIST_PIXEL_MEAN = 72.9404
FMNIST_PIXEL_STD = 90.0212


def check_images(images: np.ndarray, *, source: str = "images") -> np.ndarray:
    """Validate a batch against the user-level contract.

    Args:
        images: ``uint8[N, 28, 28]`` (a single ``uint8[28, 28]`` image is promoted to N=1).
        source: what to name in the error message (a file, an argument).

    Returns:
        The images as a C-contiguous ``uint8[N, 28, 28]`` array.

    Raises:
        ValueError: wrong dtype or shape.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 pixels 0-255, got dtype {images.dtype}")
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{source}: expected images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"got {images.shape}"
        )
    return np.ascontiguousarray(images)


def top_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """Class indices of the ``k`` highest of ``float[10]`` probabilities or logits, highest
    first. Ties go to the lower class index, as with ``argmax`` (an int8 model's dequantized
    logits can tie exactly, and numpy's default argsort, SIMD on x86, is not stable).

    Returns:
        ``int64[k]``.
    """
    return np.argsort(-np.asarray(scores), kind="stable")[:k]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis.

    Args:
        logits: ``float[N, 10]``.

    Returns:
        ``float32[N, 10]`` class probabilities summing to 1 per row.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class ModelCard:
    """What travels with every artifact (JSON sidecar, ONNX metadata_props, TFLite metadata).

    Attributes:
        name: architecture or artifact name, e.g. ``cnn`` or ``cnn-int8``.
        format: artifact format, e.g. ``keras``, ``tflite-int8``, ``onnx-fp32``.
        labels: class names in output order.
        input_spec: human-readable input contract.
        source_run: run folder the model came from, if any.
        test_accuracy: top-1 accuracy on the 10,000 test images (fraction 0-1), if measured.
        sha256: hex digest of the artifact file, if known.
        extra: anything else (quantization parameters, package versions, ...).
    """

    name: str = "unknown"
    format: str = "unknown"
    labels: tuple[str, ...] = LABELS
    input_spec: str = "float32[N, 28, 28, 1] raw pixels 0-255, dark background"
    source_run: str | None = None
    test_accuracy: float | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (the sidecar and the embedded card are this dict)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """The inverse of :meth:`to_dict`: ``from_dict(card.to_dict()) == card``. Keys that
        are not fields (cards of older versions) are kept in ``extra``, never dropped.

        Raises:
            TypeError: a field of the wrong kind (``extra`` not an object).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:
            extra = kwargs.get("extra") or {}
            if not isinstance(extra, dict):
                raise TypeError(f"extra is a {type(extra).__name__}, not an object")
            kwargs["extra"] = {**unknown, **extra}
        if "labels" in kwargs:
            kwargs["labels"] = tuple(kwargs["labels"])
        return cls(**kwargs)

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read a JSON card. Raises ValueError naming the file if it is not a card."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable model card ({exc})") from exc
