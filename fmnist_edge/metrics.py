"""Classification metrics in numpy (shared by training, export parity and ``evaluate``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fmnist_edge.contract import LABELS, NUM_CLASSES


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy in nats of ``float[N, C]`` logits against ``int[N]`` labels."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``int64[C, C]`` counts; row = true class, column = predicted class."""
    return np.bincount(np.asarray(labels, np.int64) * num_classes + predictions,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(logits: np.ndarray, labels: np.ndarray,
                          class_names: tuple[str, ...] = LABELS) -> dict[str, Any]:
    """Top-1 accuracy, loss, per-class precision / recall / F1 and the confusion matrix.

    Args:
        logits: ``float32[N, C]`` logits (or probabilities: only the argmax and the loss use
            them; pass logits for a meaningful loss).
        labels: ``uint8[N]`` true classes.
        class_names: names of the C classes.

    Returns:
        JSON-ready dict: ``top1_accuracy`` (fraction 0-1), ``loss`` (nats), ``num_images``,
        ``per_class`` (name, precision, recall, f1, support), ``confusion_matrix`` (lists).

    Raises:
        ValueError: mismatched lengths or widths.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or logits.shape[1] != len(class_names):
        raise ValueError(f"logits {logits.shape} do not match labels {labels.shape} and "
                         f"{len(class_names)} classes")
    predictions = logits.argmax(axis=1)
    cm = confusion_matrix(labels, predictions, len(class_names))
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "num_images": int(len(labels)),
        "top1_accuracy": float((predictions == labels).mean()),
        "loss": cross_entropy(logits, labels),
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        "macro_f1": float(f1.mean()),
        "confusion_matrix": cm.tolist(),
    }
