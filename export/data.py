"""Export stage 1, data: the splits, the fine-tuning images and the representative dataset,
built once from the run's own split (``fmnist_edge.data.train_val_indices``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_edge import data, runs
from fmnist_edge.export.config import ExportConfig
from fmnist_edge.train.config import AugmentConfig, TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportData(data.Splits):
    """Everything the export's stages read: the splits (``x_train``: the fine-tuning
    images), the ``uint8[M, 28, 28]`` representative dataset, and the run's augmentation and
    label smoothing."""

    calibration: np.ndarray
    augment: AugmentConfig
    label_smoothing: float


def train_config(run_dir: Path) -> TrainConfig | None:
    """The run's ``config.json`` (``None`` for a bare ``.keras`` file without one)."""
    path = runs.Run(run_dir).config
    return TrainConfig.read(path) if path.is_file() else None


def load(run_dir: Path, config: ExportConfig, data_dir: str | Path | None = None
         ) -> ExportData:
    """The export's data for the run in ``run_dir``.

    The validation split is the run's own (its ``val_size`` and ``seed``; ``config``'s for a
    model without ``config.json``), so the int8 method is never chosen on images the model
    trained on. ``config.train_limit`` keeps a stratified subset of the fine-tuning images
    (drawn with ``config.seed``). A run trained on the photo pool is fine-tuned and
    calibrated on it too, so pruning and the int8 ranges keep what it learnt about converted
    real photos. The representative dataset is ``config.calibration_images``.

    Raises:
        fmnist_edge.data.DataError: missing or corrupt data.
        fmnist_edge.runs.RunError: an unreadable ``config.json``.
    """
    run_cfg = train_config(run_dir)
    x, y = data.load_split("train", data_dir)
    x_test, y_test = data.load_split("test", data_dir)
    train_idx, val_idx = data.train_val_indices(
        y, val_size=run_cfg.val_size if run_cfg else config.val_size,
        seed=run_cfg.seed if run_cfg else config.seed, train_limit=config.train_limit,
        limit_seed=config.seed)
    x_tr, y_tr = x[train_idx], y[train_idx]
    if run_cfg is not None and run_cfg.photo_augment > 0:
        from fmnist_edge.train.photo_pool import build_pool

        pool, pooled = build_pool(x_tr, y_tr, size=min(run_cfg.photo_pool_size, len(x_tr)),
                                  seed=run_cfg.seed, log=log.info)
        log.info("fine-tuning and calibration include %d photo-pool images", len(pool))
        x_tr, y_tr = np.concatenate([x_tr, pool]), np.concatenate([y_tr, y_tr[pooled]])
    return ExportData(x_tr, y_tr, x[val_idx], y[val_idx], x_test, y_test,
                      calibration=config.calibration_images(x_tr),
                      augment=run_cfg.augment if run_cfg else AugmentConfig(),
                      label_smoothing=run_cfg.label_smoothing if run_cfg else 0.0)
