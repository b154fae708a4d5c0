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


def _overlay(ax, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _channel_grid(ax, maps: np.ndarray, title: str, count: int = 16) -> None:
    """Up to ``count`` channels of ``float[h, w, c]`` tiled in a square grid, each scaled."""
    c = min(count, maps.shape[-1])
    side = int(np.ceil(np.sqrt(c)))
    h, w = maps.shape[:2]
    grid = np.zeros((side * (h + 1), side * (w + 1)), np.float32)
    for k in range(c):
        m = maps[..., k]
        m = (m - m.min()) / (np.ptp(m) or 1.0)
        r, q = divmod(k, side)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = m
    ax.imshow(grid, cmap="viridis")
    ax.set_title(f"{title}: {c} of {maps.shape[-1]} channels, {h}x{w}", fontsize=8)
    ax.axis("off")


def explanation(image: np.ndarray, probs: np.ndarray, heat: np.ndarray, method: str,
                first: np.ndarray | None, last: np.ndarray | None, path: Path,
                top_k: int = 3) -> Path:
    """One image explained: the 28x28 input, its top-k, the heat map blended on it
    (Grad-CAM or saliency) and, for convolutional models, the first and last stages'
    activations."""
    plt = _pyplot()
    panels = 4 if first is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    order = np.argsort(-probs)[:top_k]
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input (what the model saw)\n" + "\n".join(
        f"{LABELS[i]} {probs[i]:.0%}" for i in order), fontsize=8)
    axes[0].axis("off")
    name = "Grad-CAM, last conv stage" if method == "gradcam" else "input-gradient saliency"
    _overlay(axes[1], image, heat, f"{name}\nfor {LABELS[order[0]]}")
    if first is not None:
        _channel_grid(axes[2], first, "first conv stage")
        _channel_grid(axes[3], last, "last conv stage")
    return _save(fig, path)


def gradcam_grid(images: np.ndarray, labels: np.ndarray, heat: np.ndarray, predicted,
                 method: str, path: Path) -> Path:
    """Heat maps of several test images blended on them, titled predicted / true class."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(1.9 * ((n + 1) // 2), 4.4))
    for ax, img, h, p, t in zip(np.ravel(axes), images, heat, predicted, labels):
        _overlay(ax, img, h, f"{LABELS[int(p)]}\n(true {LABELS[int(t)]})")
    fig.suptitle("Grad-CAM (last conv stage)" if method == "gradcam"
                 else "input-gradient saliency (no convolutions)", fontsize=9)
    return _save(fig, path)


def feature_maps(image: np.ndarray, first: np.ndarray, last: np.ndarray, path: Path) -> Path:
    """One test image and its first and last convolutional stages' activations."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input", fontsize=8)
    axes[0].axis("off")
    _channel_grid(axes[1], first, "first conv stage")
    _channel_grid(axes[2], last, "last conv stage")
    return _save(fig, path)


def architecture_diagram(model, path: Path) -> Path:
    """The layers as a diagram: Keras' ``plot_model`` when pydot and Graphviz are installed,
    else a drawn block list (one box per layer: name, type, output shape; arrows between)."""
    try:
        import pydot  # noqa: F401

        from fmnist_edge.train.keras_shim import keras

        return atomic.write_with(path, lambda tmp: keras.utils.plot_model(
            model, to_file=str(tmp), show_shapes=True, dpi=80))
    except Exception:  # no pydot / Graphviz: draw it
        pass
    plt = _pyplot()
    rows = [(layer.name, layer.__class__.__name__,
             str(getattr(layer, "output_shape", ""))) for layer in model.layers]
    per_col = 36
    cols = int(np.ceil(len(rows) / per_col))
    fig, ax = plt.subplots(figsize=(4.2 * cols, 0.32 * min(len(rows), per_col) + 0.8))
    ax.set_xlim(0, cols)
    ax.set_ylim(min(len(rows), per_col), -0.8)
    ax.axis("off")
    for k, (name, kind, shape) in enumerate(rows):
        col, row = divmod(k, per_col)
        colour = {"Conv2D": "#cde", "DepthwiseConv2D": "#cde", "Dense": "#edc",
                  "BatchNormalization": "#eee", "Add": "#dec"}.get(kind, "#f7f7f7")
        ax.add_patch(plt.Rectangle((col + 0.04, row - 0.36), 0.92, 0.72, facecolor=colour,
                                   edgecolor="#666", linewidth=0.6))
        ax.text(col + 0.08, row, f"{name}  [{kind}]  {shape}", fontsize=6, va="center",
                family="monospace")
        if row + 1 < per_col and k + 1 < len(rows):
            ax.annotate("", (col + 0.5, row + 0.64), (col + 0.5, row + 0.36),
                        arrowprops={"arrowstyle": "->", "lw": 0.5})
    ax.set_title(f"{model.name}: {len(rows)} layers, {model.count_params():,} parameters "
                 "(in order, top to bottom, left to right)", fontsize=8)
    return _save(fig, path)
