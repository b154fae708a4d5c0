"""Run-folder figures (matplotlib, Agg backend), each written atomically as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist_edge import atomic
from fmnist_edge.contract import LABELS, softmax


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss, top-1 accuracy (train / validation) and learning rate per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "top-1 accuracy")):
        # Markers: a 1-epoch run is a single point, which a line alone does not draw.
        ax.plot(epochs, [h.get(key) for h in history], marker="o", ms=3, label="train")
        if any(f"val_{key}" in h for h in history):
            ax.plot(epochs, [h.get(f"val_{key}") for h in history], marker="o", ms=3,
                    label="validation")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].plot(epochs, [h.get("lr") for h in history], marker="o", ms=3)
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    axes[2].grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def confusion_matrix(cm: np.ndarray, path: Path, labels=LABELS) -> Path:
    """Confusion matrix (rows true, columns predicted) with counts."""
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test set)")
    return _save(fig, path)


def sample_predictions(images: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                       path: Path, n: int = 36, seed: int = 0) -> Path:
    """A grid of test images with predicted class and confidence; a wrong one in red with
    its true class below it."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=min(n, len(images)), replace=False)
    probs = softmax(logits[idx])
    side = int(np.ceil(np.sqrt(len(idx))))
    fig, axes = plt.subplots(side, side, figsize=(side * 1.6, side * 1.9))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i, p in zip(np.ravel(axes), idx, probs):
        pred = int(p.argmax())
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        wrong = pred != labels[i]
        title = f"{LABELS[pred]} {p[pred]:.0%}"
        if wrong:
            title += f"\ntrue: {LABELS[int(labels[i])]}"
        ax.set_title(title, fontsize=7, color="red" if wrong else "black")
    return _save(fig, path)


def confidence_boxplot(labels: np.ndarray, logits: np.ndarray, path: Path) -> Path:
    """Per true class: distribution of the probability given to the true class."""
    plt = _pyplot()
    probs = softmax(logits)
    true_prob = probs[np.arange(len(labels)), labels]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.boxplot([true_prob[labels == c] for c in range(len(LABELS))], showfliers=False)
    ax.set_xticks(range(1, len(LABELS) + 1), LABELS, rotation=30, ha="right")
    ax.set(ylabel="probability of the true class", title="per-class confidence (test set)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def architecture_summary(summary: str, path: Path) -> Path:
    """The Keras model summary rendered as a monospace figure."""
    plt = _pyplot()
    lines = summary.splitlines()
    fig = plt.figure(figsize=(10, 0.16 * len(lines) + 0.5))
    fig.text(0.01, 0.99, summary, family="monospace", fontsize=7, va="top")
    return _save(fig, path)
