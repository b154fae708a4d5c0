"""Find the model card of an artifact: its JSON sidecar ``<file>.json``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from fmnist_edge.contract import ModelCard

#: Name of the model-card entry embedded in artifacts (ONNX metadata_props, TFLite metadata).
CARD_KEY = "fmnist_edge_card"

log = logging.getLogger(__name__)


def sidecar_path(model_path: str | Path) -> Path:
    """``model_int8.tflite`` -> ``model_int8.tflite.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 digest of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_for(model_path: Path, fmt: str,
             read_embedded: Callable[[], dict | None] = lambda: None) -> ModelCard:
    """The sidecar card if present, else the card ``read_embedded()`` finds in the model's
    own metadata (only called without a sidecar), else a minimal card.

    A card is metadata: a sidecar or embedded card that cannot be read (not JSON, not an
    object, wrong field types) is logged as a warning naming the file and skipped; it never
    makes a valid model unusable."""
    side = sidecar_path(model_path)
    if side.is_file():
        try:
            return ModelCard.read(side)
        except ValueError as exc:
            log.warning("warning: ignoring the model card %s (%s)", side, exc)
    try:
        embedded = read_embedded()
        if embedded:
            if not isinstance(embedded, dict):
                raise ValueError("not a JSON object")
            card = ModelCard.from_dict(embedded)
            # a file cannot hold its own digest: the embedded card gets it from the file
            return dataclasses.replace(card, sha256=card.sha256 or file_sha256(model_path))
    except (ValueError, TypeError) as exc:
        log.warning("warning: ignoring the model card embedded in %s (%s)", model_path, exc)
    return ModelCard(name=model_path.stem, format=fmt)
