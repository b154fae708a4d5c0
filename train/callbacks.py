"""Keras callbacks that keep the run folder current and atomic."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

from fmnist_edge import atomic
from fmnist_edge.train.keras_shim import keras


def save_model(model: keras.Model, path: Path) -> Path:
    """Atomically save ``model`` to a ``.keras`` file."""
    return atomic.write_with(path, lambda tmp: model.save(tmp))


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves (written to a temp file, then renamed).

    ``best`` may be seeded (on resume) so that a worse epoch never overwrites a better file.
    """

    def __init__(self, path: Path, monitor: str = "val_accuracy", best: float = -math.inf):
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, best
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch = float(value), epoch
            save_model(self.model, self.path)


class HistoryWriter(keras.callbacks.Callback):
    """Append each epoch's logs (+ learning rate and wall time in s) to history.json/.csv.

    On resume the earlier history is kept and epochs at or after the restored one dropped.
    """

    def __init__(self, json_path: Path, csv_path: Path, history: list[dict] | None = None):
        super().__init__()
        self.json_path, self.csv_path = Path(json_path), Path(csv_path)
        self.history: list[dict] = list(history or [])
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.history = [h for h in self.history if h["epoch"] < epoch]
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "epoch_time_s": time.perf_counter() - self._start}
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations - 1)
        row["lr"] = float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        self.history.append(row)
        self.write()

    def write(self):
        atomic.write_text(self.json_path, json.dumps(self.history, indent=1) + "\n")
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for row in self.history for k in row))
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.history)
        atomic.write_text(self.csv_path, buf.getvalue())
