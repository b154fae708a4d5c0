"""Export stage 5, verify: parity of every artifact with the float model on the full test
set, the gate, and the model card of each artifact (embedded in the file and as its JSON
sidecar, the same fields in both)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist_edge import atomic
from fmnist_edge.contract import LABELS, ModelCard
from fmnist_edge.export import parity
from fmnist_edge.export.compress import Compressed
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.export.make import CONVERTERS
from fmnist_edge.formats import FORMATS, Format
from fmnist_edge.runtime.card import file_sha256, sidecar_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """The float Keras model the artifacts are judged against.

    Attributes:
        name: the model's name (``cnn``, ...), the artifacts' card name.
        source: the ``.keras`` file.
        parameters: its parameter count.
        test_logits: ``float32[10000, 10]`` logits on the test set.
        test_accuracy: top-1 on the test set (fraction 0-1).
    """

    name: str
    source: Path
    parameters: int
    test_logits: np.ndarray
    test_accuracy: float

    @classmethod
    def of(cls, model, source: Path, x_test: np.ndarray, y_test: np.ndarray) -> Reference:
        from fmnist_edge.train.trainer import predict_logits

        logits = predict_logits(model, x_test)
        return cls(model.name, source, int(model.count_params()), logits,
                   float((logits.argmax(1) == y_test).mean()))


def write_card(path: Path, fmt: Format, reference: Reference, test_accuracy: float,
               notes: dict[str, Any]) -> ModelCard:
    """Embed the artifact's card in ``path`` and write it as ``<file>.json`` with the final
    file's sha256 (a file cannot hold its own digest; a card read from the file gets it
    from the file, so both read back equal)."""
    card = ModelCard(name=reference.name, format=fmt.name, labels=LABELS,
                     source_run=str(reference.source.parent), test_accuracy=test_accuracy,
                     extra={"reference_test_accuracy": reference.test_accuracy,
                            **({"io": notes} if notes else {})})
    atomic.write_bytes(path, CONVERTERS[fmt.family].embed(path.read_bytes(), card.to_dict()))
    card = ModelCard.from_dict({**card.to_dict(), "sha256": file_sha256(path)})
    atomic.write_text(sidecar_path(path), card.to_json() + "\n")
    return card


def _pruned_float_record(pruned: np.ndarray, reference: np.ndarray, labels: np.ndarray,
                         artifacts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Split the int8 models' disagreement with the float model into its two stages.

    Args:
        pruned: ``float32[N, 10]`` logits of the pruned float Keras model (before quantization).
        reference: ``float32[N, 10]`` logits of the float (unpruned) Keras model.
        labels: ``uint8[N]`` test labels.
        artifacts: ``{format: float32[N, 10]}`` logits of the exported artifacts.

    Returns:
        ``top1_accuracy`` and ``top1_agreement`` (with the float model) of the pruned float
        model, and ``int8_agreement``: ``{format: top-1 agreement with the pruned float
        model}`` for the quantized artifacts (what quantization alone changes).
    """
    top = pruned.argmax(1)
    return {"top1_accuracy": float((top == labels).mean()),
            "top1_agreement": float((top == reference.argmax(1)).mean()),
            "int8_agreement": {name: float((lg.argmax(1) == top).mean())
                               for name, lg in artifacts.items() if FORMATS[name].quantized}}


def verify(stage: Path, reference: Reference, data, config: ExportConfig,
           notes: dict[str, dict[str, Any]], compressed: Compressed | None) -> dict[str, Any]:
    """Measure every artifact in ``stage`` (``notes``' formats) on the test set of ``data``
    against ``reference``, judge it by ``config``'s gate, and write its card.

    Returns:
        The parity record (``parity.json``): per-artifact records, the gate, the int8
        artifacts' cross-runtime agreement and per-class deltas, and, when pruned, what
        pruning alone cost (:func:`_pruned_float_record`).
    """
    from fmnist_edge.train.trainer import predict_logits

    records, logits = [], {}
    for name, fmt_notes in notes.items():
        fmt = FORMATS[name]
        path = stage / fmt.filename
        log.info("parity: %s on %d test images", name, len(data.y_test))
        record, logits[name] = parity.measure(path, name, data.x_test, data.y_test,
                                              reference.test_logits,
                                              latency_runs=config.latency_runs)
        parity.judge(record, max_accuracy_drop=config.max_accuracy_drop,
                     float_atol=config.float_atol, max_class_drop=config.max_class_drop)
        write_card(path, fmt, reference, record.top1_accuracy, fmt_notes)
        record.size_bytes, record.gzip_bytes = path.stat().st_size, parity.gzip_size(path)
        records.append(record)
    passed = all(r.passed for r in records)
    result: dict[str, Any] = {
        "source_model": str(reference.source),
        "num_test_images": int(len(data.y_test)),
        "reference": {"format": "keras", "top1_accuracy": reference.test_accuracy,
                      "parameters": reference.parameters},
        "artifacts": [parity.to_dict(r) for r in records],
        "gate": {"status": "passed" if passed else "failed",
                 "max_accuracy_drop_pp": config.max_accuracy_drop,
                 "max_class_drop_pp": config.max_class_drop,
                 "float_atol": config.float_atol},
    }
    quantized = [name for name in logits if FORMATS[name].quantized]
    if len(quantized) == 2:
        a, b = (logits[name].argmax(1) for name in quantized)
        result["cross_runtime_int8_agreement"] = float((a == b).mean())
    if compressed is not None and compressed.sparsity_gzip:
        result["sparsity_gzip"] = compressed.sparsity_gzip
    if compressed is not None and compressed.pruned:
        result["pruned_float"] = _pruned_float_record(
            predict_logits(compressed.float_model, data.x_test), reference.test_logits,
            data.y_test, logits)
    result["int8_per_class_delta_pp"] = {
        r.format: r.per_class_accuracy_delta_pp for r in records if FORMATS[r.format].quantized}
    return result
