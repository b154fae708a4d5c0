"""Parity of exported artifacts with the float Keras model, on the full test set, each run
by its real runtime (LiteRT for .tflite, onnxruntime for .onnx)."""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fmnist_edge.benchmark import measure_latency
from fmnist_edge.contract import LABELS
from fmnist_edge.formats import FORMATS
from fmnist_edge.runtime import load


@dataclass
class ArtifactParity:
    """One artifact against the float Keras reference (accuracies are fractions 0-1)."""

    format: str
    file: str
    size_bytes: int
    gzip_bytes: int
    top1_accuracy: float
    accuracy_delta_pp: float  # artifact minus Keras, percentage points
    top1_agreement: float  # fraction of test images with the same top-1 as Keras
    max_abs_logit_diff: float
    # max |artifact - Keras| / max(1, |Keras|) over all logits: absolute for |logit| <= 1,
    # relative above (float32 spacing at a logit of 1,000 is already 6e-5).
    max_scaled_logit_diff: float
    per_class_accuracy_delta_pp: dict[str, float]
    latency_p50_ms: float
    latency_p90_ms: float
    passed: bool = True
    reasons: list[str] = field(default_factory=list)


def gzip_size(path: Path) -> int:
    """Bytes of ``path`` gzipped at level 9 (what a sparse model saves in transport)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``float64[10]``: top-1 accuracy (recall) of each true class."""
    hit = logits.argmax(1) == labels
    return np.array([hit[labels == c].mean() for c in range(len(LABELS))])


def measure(path: Path, fmt: str, images: np.ndarray, labels: np.ndarray,
            reference_logits: np.ndarray, *, latency_runs: int = 300
            ) -> tuple[ArtifactParity, np.ndarray]:
    """Run ``path`` on the test set and time batch-1 inference on one thread.

    Returns:
        The parity record and the artifact's ``float32[N, 10]`` logits.
    """
    runtime = load(path, num_threads=1)
    logits = runtime.logits(images)
    ref_pred = reference_logits.argmax(1)
    accuracy = float((logits.argmax(1) == labels).mean())
    ref_accuracy = float((ref_pred == labels).mean())
    class_delta = (per_class_accuracy(logits, labels)
                   - per_class_accuracy(reference_logits, labels)) * 100
    latency = measure_latency(runtime, images[:64], batch_size=1, warmup=20,
                              runs=latency_runs)
    record = ArtifactParity(
        format=fmt, file=path.name, size_bytes=path.stat().st_size,
        gzip_bytes=gzip_size(path), top1_accuracy=accuracy,
        accuracy_delta_pp=(accuracy - ref_accuracy) * 100,
        top1_agreement=float((logits.argmax(1) == ref_pred).mean()),
        max_abs_logit_diff=float(np.abs(logits - reference_logits).max()),
        max_scaled_logit_diff=scaled_logit_diff(logits, reference_logits),
        per_class_accuracy_delta_pp=dict(zip(LABELS, map(float, class_delta))),
        latency_p50_ms=latency.p50_ms, latency_p90_ms=latency.p90_ms)
    return record, logits


def scaled_logit_diff(logits: np.ndarray, reference: np.ndarray) -> float:
    """``max |logits - reference| / max(1, |reference|)`` over ``float32[N, 10]`` logits.

    A mixed absolute / relative tolerance (within a factor 2 of numpy ``isclose`` with
    ``atol == rtol``): a plain absolute bound cannot hold for large logits, whose float32
    spacing alone exceeds it (1.2e-4 between 1,024 and 2,048; IEEE 754 binary32)."""
    diff = np.abs(logits.astype(np.float64) - reference)
    return float((diff / np.maximum(1.0, np.abs(reference))).max())


def judge(record: ArtifactParity, *, max_accuracy_drop: float, float_atol: float,
          max_class_drop: float = float("inf")) -> None:
    """Apply the gate to ``record`` in place (``passed``, ``reasons``).

    Every artifact may lose at most ``max_accuracy_drop`` percentage points of top-1
    accuracy overall and ``max_class_drop`` points on any one class (its recall), so a model
    that keeps its overall top-1 by trading one class away fails; float32 artifacts must
    also reproduce the Keras logits within ``float_atol`` x max(1, |logit|)
    (:func:`scaled_logit_diff`).
    """
    spec = FORMATS[record.format]
    if spec.float_reference and record.max_scaled_logit_diff > float_atol:
        record.reasons.append(f"max |logit diff| / max(1, |logit|) "
                              f"{record.max_scaled_logit_diff:.2e} > {float_atol:.0e}")
    if -record.accuracy_delta_pp > max_accuracy_drop:
        record.reasons.append(f"top-1 drop {-record.accuracy_delta_pp:.2f} pp > "
                              f"{max_accuracy_drop} pp")
    deltas = record.per_class_accuracy_delta_pp
    worst_class, worst = min(deltas.items(), key=lambda kv: kv[1]) if deltas else ("", 0.0)
    if -worst > max_class_drop:
        record.reasons.append(f"{worst_class} top-1 drop {-worst:.2f} pp > "
                              f"{max_class_drop} pp (--max-class-drop)")
    record.passed = not record.reasons


def to_dict(record: ArtifactParity) -> dict:
    return asdict(record)
