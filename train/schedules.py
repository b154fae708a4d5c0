"""Learning-rate schedules (functions of the optimizer step)."""

from __future__ import annotations

import math

from fmnist_edge.train.keras_shim import keras, tf


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak_lr``, then cosine decay to ``min_lr``
    (Loshchilov & Hutter 2017, SGDR, arXiv:1608.03983; Goyal et al. 2017 warm-up)."""

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0):
        self.peak_lr, self.total_steps = float(peak_lr), int(total_steps)
        self.warmup_steps, self.min_lr = int(warmup_steps), float(min_lr)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak_lr * (step + 1.0) / max(self.warmup_steps, 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        t = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + tf.cos(math.pi * t))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr}


class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle policy (Smith & Topin 2017, arXiv:1708.07120), cosine-annealed as in
    PyTorch's ``OneCycleLR``: from ``max_lr / div_factor`` up to ``max_lr`` over
    ``pct_start`` of training, then down to ``max_lr / (div_factor * final_div_factor)``."""

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.25,
                 div_factor: float = 25.0, final_div_factor: float = 1e4):
        self.max_lr, self.total_steps = float(max_lr), int(total_steps)
        self.pct_start, self.div_factor = float(pct_start), float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        up = max(self.pct_start * self.total_steps, 1.0)
        down = max(self.total_steps - up, 1.0)

        def anneal(start, end, t):
            return end + 0.5 * (start - end) * (1 + tf.cos(math.pi * tf.clip_by_value(t, 0, 1)))

        return tf.where(step < up, anneal(initial, self.max_lr, step / up),
                        anneal(self.max_lr, final, (step - up) / down))

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


class TriangularCyclic(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular cyclical learning rate (Smith 2017, arXiv:1506.01186, eq. in sec. 3.1):
    linear between ``base_lr`` and ``max_lr`` with half-cycle ``step_size`` steps."""

    def __init__(self, base_lr: float, max_lr: float, step_size: int):
        self.base_lr, self.max_lr, self.step_size = float(base_lr), float(max_lr), int(step_size)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        cycle = tf.floor(1 + step / (2 * self.step_size))
        x = tf.abs(step / self.step_size - 2 * cycle + 1)
        return self.base_lr + (self.max_lr - self.base_lr) * tf.maximum(0.0, 1 - x)

    def get_config(self):
        return {"base_lr": self.base_lr, "max_lr": self.max_lr, "step_size": self.step_size}


def make_schedule(config, steps_per_epoch: int):
    """The learning rate (float or schedule) for a :class:`TrainConfig`."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return WarmupCosine(config.lr, total, int(config.warmup_epochs * steps_per_epoch),
                            config.min_lr)
    if config.schedule == "onecycle":
        return OneCycle(config.lr, total)
    if config.schedule == "triangular":
        return TriangularCyclic(max(config.min_lr, config.lr / 10), config.lr,
                                max(1, int(config.cycle_epochs * steps_per_epoch)))
    raise ValueError(f"unknown schedule {config.schedule!r}")


def make_optimizer(config, steps_per_epoch: int):
    """Adam, AdamW or SGD (momentum 0.9, Nesterov) with the configured schedule."""
    lr = make_schedule(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                    weight_decay=config.weight_decay or None)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
