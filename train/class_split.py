"""The CNN seed's two-stage class-split recipe (transfer between disjoint class sets).

Stage 1 trains the architecture on classes 0-4 (T-shirt/top ... Coat) with a 5-way head.
Stage 2 freezes everything up to the pooled features, puts a new 5-way head on top and trains
it on classes 5-9 (Sandal ... Ankle boot). Each stage is evaluated on the test images of its
own classes; the stage models are ``stage1_model.keras`` and ``stage2_model.keras``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, runs
from fmnist_edge.contract import LABELS
from fmnist_edge.metrics import classification_report
from fmnist_edge.train import architectures
from fmnist_edge.train.config import TrainConfig, builder_kwargs
from fmnist_edge.train.keras_shim import keras
from fmnist_edge.train.trainer import (
    Splits,
    TrainResult,
    fit,
    load_splits,
    predict_logits,
    prepare,
    write_state,
)

STAGES = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))


def _subset(splits: Splits, classes: tuple[int, ...]) -> Splits:
    """Keep only ``classes``, relabelled 0..len(classes)-1."""
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    parts = []
    for x, y in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val),
                 (splits.x_test, splits.y_test)):
        keep = np.isin(y, classes)
        parts += [x[keep], lookup[y[keep]].astype(np.uint8)]
    return Splits(*parts)


def _features(model: keras.Model):
    """The pooled features: the input of the classifier (and of its dropout, if any)."""
    x = model.layers[-1].input
    producer = x._keras_history.layer
    if isinstance(producer, keras.layers.Dropout):
        x = producer.input
    return x


def _with_head(model: keras.Model, num_classes: int, dropout: float, name: str) -> keras.Model:
    x = _features(model)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    out = keras.layers.Dense(num_classes, dtype="float32", name=f"{name}_logits")(x)
    return keras.Model(model.input, out, name=f"{model.name}_{name}")


def train_class_split(config: TrainConfig, *, data_dir=None, runs_dir=runs.DEFAULT_RUNS_DIR,
                      run_dir: str | Path | None = None, verbose: int = 1) -> TrainResult:
    """Run both stages; metrics.json reports each stage's test top-1 accuracy.

    Returns:
        :class:`TrainResult`; ``metrics`` has ``stage1_stage_accuracy`` and
        ``stage2_stage_accuracy`` (fractions of the test images of each stage's classes).
    """
    start = time.perf_counter()
    splits = load_splits(config, data_dir)
    kwargs = builder_kwargs(config)
    run_dir = Path(run_dir) if run_dir else runs.new_run_dir(f"{config.arch}-split", runs_dir)
    strategy, policy = prepare(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(runs.Run(run_dir).config, config.to_dict())
    write_state(run_dir, "training")
    dropout = config.dropout if config.dropout is not None else 0.2
    metrics: dict = {"arch": config.arch, "recipe": "class-split", "stages": []}
    previous = None
    for stage, classes in enumerate(STAGES, start=1):
        prefix = f"stage{stage}_"
        part = _subset(splits, classes)
        with strategy.scope():
            if previous is None:
                base = architectures.build(config.arch, **kwargs)
            else:
                base = previous
                for layer in base.layers:
                    layer.trainable = False
            model = _with_head(base, len(classes), dropout, f"stage{stage}")
            best = fit(model, config, part, run_dir, prefix=prefix, num_classes=len(classes),
                       verbose=verbose)
        names = tuple(LABELS[c] for c in classes)
        report = classification_report(predict_logits(best, part.x_test), part.y_test, names)
        report["classes"] = list(names)
        report["trainable_parameters"] = int(sum(np.prod(w.shape)
                                                 for w in best.trainable_weights))
        atomic.write_json(run_dir / f"{prefix}{runs.METRICS_FILE}", report)
        metrics["stages"].append(report)
        metrics[f"stage{stage}_stage_accuracy"] = report["top1_accuracy"]
        previous = best
    metrics.update({"top1_accuracy": metrics["stage2_stage_accuracy"],
                    "loss": metrics["stages"][-1]["loss"],
                    "parameters": int(previous.count_params()),
                    "precision_policy": policy,
                    "train_time_s": time.perf_counter() - start})
    atomic.write_json(runs.Run(run_dir).metrics, metrics)
    wall = time.perf_counter() - start
    shutil.rmtree(runs.Run(run_dir).backup, ignore_errors=True)
    write_state(run_dir, "finished", wall_time_s=wall)
    return TrainResult(run_dir, metrics, wall)
