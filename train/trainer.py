"""Fit a registered architecture on Fashion-MNIST and leave a complete run folder.

Run folder (``runs/<arch>/<run-id>/``): ``model.keras`` (best validation checkpoint),
``config.json``, ``history.json`` / ``history.csv``, ``metrics.json``, ``summary.txt`` and the
figures of :mod:`fmnist_edge.train.plots`; while training, ``backup/`` holds the resumable
state (tf_keras BackupAndRestore) and ``state.json`` the status.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist_edge import atomic, data, runs
from fmnist_edge.data import Splits
from fmnist_edge.metrics import classification_report
from fmnist_edge.provenance import provenance
from fmnist_edge.train import architectures, plots
from fmnist_edge.train.callbacks import BestCheckpoint, HistoryWriter
from fmnist_edge.train.config import TrainConfig, builder_kwargs
from fmnist_edge.train.dataset import make_dataset
from fmnist_edge.train.keras_shim import keras, load_model, tf, with_policy
from fmnist_edge.train.schedules import make_optimizer

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped training; the run folder holds the best model so far and a
    resumable state (``fmnist-edge train --resume RUN``)."""

    def __init__(self, run_dir: Path):
        super().__init__(f"training interrupted; best checkpoint and resumable state kept in "
                         f"{run_dir}; continue with `fmnist-edge train --resume {run_dir}`")
        self.run_dir = run_dir


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a finished run: its folder, test metrics and wall time (s)."""

    run_dir: Path
    metrics: dict[str, Any]
    wall_time_s: float


def load_splits(config: TrainConfig, data_dir: str | Path | None = None) -> Splits:
    """Verified Fashion-MNIST with the stratified, seeded validation hold-out of ``config``."""
    x, y = data.load_split("train", data_dir)
    x_test, y_test = data.load_split("test", data_dir)
    train_idx, val_idx = data.train_val_indices(y, val_size=config.val_size, seed=config.seed,
                                                train_limit=config.train_limit)
    return Splits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test)


def _strategy(config: TrainConfig) -> tf.distribute.Strategy:
    if config.distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if config.distribute == "multiworker":
        import os

        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--distribute multiworker needs $TF_CONFIG (the cluster and this "
                             "worker's task), see the README's multi-worker section")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except in a multi-worker cluster,
    where only the chief does (the ``chief`` task, else ``worker`` 0, as TensorFlow's
    multi-worker guide defines it)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def _mixed_policy() -> str:
    # float16 only pays off on GPUs; on CPUs bfloat16 is the supported mixed type.
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def _precision_policy(config: TrainConfig) -> str:
    return _mixed_policy() if config.mixed_precision else "float32"


def write_state(run_dir: Path, status: str, **extra: Any) -> None:
    """Write ``state.json`` (``status`` and ``extra``), keeping the run's per-segment
    provenance records (``segments``) unless ``extra`` replaces them."""
    path = runs.Run(run_dir).state
    if "segments" not in extra and path.is_file():
        extra["segments"] = runs.read_json(path, {}).get("segments", [])
    atomic.write_json(path, {"status": status, **extra})


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    """Compile with the configured optimizer/schedule, label-smoothed cross-entropy on logits
    and top-1 accuracy; with a teacher, the distillation loss of :func:`distillation_loss`."""
    cross_entropy = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing)
    if not config.teacher:
        loss, accuracy = cross_entropy, keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = distillation_loss(cross_entropy, config.distill_temperature,
                                 config.distill_alpha)

        def accuracy_fn(y_true, logits):
            return keras.metrics.categorical_accuracy(y_true[:, :logits.shape[-1]], logits)

        accuracy = keras.metrics.MeanMetricWrapper(accuracy_fn, name="accuracy")
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss,
                  metrics=[accuracy])


def distillation_loss(cross_entropy, temperature: float, alpha: float):
    """Hinton et al. 2015 (arXiv:1503.02531, sec. 2): ``alpha * T**2 * CE(softmax(teacher / T),
    softmax(student / T)) + (1 - alpha) * CE(labels, student)``.

    The targets are ``float32[B, 2C]``: the one-hot labels, then the teacher's softened
    probabilities (:func:`with_teacher_targets`); ``float32[B, C]`` targets (validation) get
    the label cross-entropy alone.
    """
    def loss(y_true, logits):
        classes = logits.shape[-1]
        if y_true.shape[-1] == classes:
            return cross_entropy(y_true, logits)
        labels, soft = y_true[:, :classes], y_true[:, classes:]
        kd = keras.losses.categorical_crossentropy(soft, logits / temperature, from_logits=True)
        return alpha * temperature ** 2 * tf.reduce_mean(kd) + (
            1 - alpha) * cross_entropy(labels, logits)

    return loss


def load_teachers(spec: str, *, mixed_precision: bool = False) -> list[keras.Model]:
    """The teacher models of ``--teacher`` (comma-separated run folders or ``.keras`` files),
    computing in float32, or under the mixed policy with ``mixed_precision``
    (``--teacher-mixed-precision``).

    Raises:
        fmnist_edge.runs.RunError: a teacher path holds no model.
        ValueError: a teacher does not honour the contract.
    """
    teachers = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        path = runs.resolve_model(item)
        # one rebuild at most: straight to the wanted policy (load_model is the float32 case)
        model = with_policy(keras.models.load_model(path, compile=False),
                            _mixed_policy() if mixed_precision else "float32")
        if model.output_shape != (None, 10):
            raise ValueError(f"--teacher {item}: outputs {model.output_shape}, not (None, 10)")
        model.trainable = False
        teachers.append(model)
    return teachers


def with_teacher_targets(ds: tf.data.Dataset, teachers: list[keras.Model],
                         temperature: float) -> tf.data.Dataset:
    """Append ``softmax(mean(teacher logits) / T)`` to each batch's one-hot targets, computed
    on the very (augmented) batch the student sees: ``(x, y[B, C]) -> (x, [y, q][B, 2C])``."""
    def add(x, y):
        logits = tf.add_n([tf.cast(t(x, training=False), tf.float32)
                           for t in teachers]) / len(teachers)
        return x, tf.concat([y, tf.nn.softmax(logits / temperature)], axis=-1)

    return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def fit(model: keras.Model, config: TrainConfig, splits: Splits, run_dir: Path, *,
        prefix: str = "", num_classes: int = 10, verbose: int = 1,
        reload: bool = True) -> keras.Model:
    """Fit ``model`` (compiled here) with checkpointing, resumable backups and history.

    Args:
        model: uncompiled model built under the active distribution strategy scope.
        config: the run's configuration.
        splits: data (labels must lie in ``[0, num_classes)``).
        run_dir: run folder; files get ``prefix`` (e.g. ``stage1_``).
        prefix: file-name prefix for multi-stage recipes.
        num_classes: width of the one-hot labels.
        verbose: Keras verbosity (1 progress bar, 2 one line per epoch, 0 silent).
        reload: return the best checkpoint reloaded from disk (``False``: the model as
            trained; under a multi-worker strategy, reload outside its scope, or every
            worker would have to take part in the new model's collective initialisation).

    Returns:
        The best checkpoint (by validation accuracy), reloaded from disk.

    Raises:
        TrainingInterrupted: on Ctrl-C / SIGTERM (state kept for ``--resume``).
    """
    steps = math.ceil(len(splits.x_train) / config.batch_size)
    compile_model(model, config, steps)
    pool = None
    if config.photo_augment > 0:
        from fmnist_edge.train.photo_pool import build_pool

        pool = build_pool(splits.x_train, splits.y_train,
                          size=min(config.photo_pool_size, len(splits.x_train)),
                          seed=config.seed)
    train_ds = make_dataset(splits.x_train, splits.y_train, batch_size=config.batch_size,
                            num_classes=num_classes, training=True, augment=config.augment,
                            seed=config.seed, photo_pool=pool,
                            photo_fraction=config.photo_augment)
    if config.teacher:
        teachers = load_teachers(config.teacher,
                                 mixed_precision=config.teacher_mixed_precision)
        train_ds = with_teacher_targets(train_ds, teachers, config.distill_temperature)
    has_val = len(splits.x_val) > 0
    val_ds = (make_dataset(splits.x_val, splits.y_val, batch_size=512,
                           num_classes=num_classes) if has_val else None)
    monitor = "val_accuracy" if has_val else "accuracy"
    history_json = run_dir / f"{prefix}{runs.HISTORY_JSON}"
    previous = runs.read_json(history_json, [])
    best = max((h[monitor] for h in previous if monitor in h), default=-math.inf)
    model_path = run_dir / f"{prefix}{runs.MODEL_FILE}"
    # The resumable state is saved last at each epoch end: a kill while the checkpoint or the
    # history is written makes --resume repeat that epoch (the history drops and rewrites
    # it), instead of resuming after an epoch whose record was lost.
    callbacks = [
        BestCheckpoint(model_path, monitor, best),
        HistoryWriter(history_json, run_dir / f"{prefix}{runs.HISTORY_CSV}", previous),
        keras.callbacks.BackupAndRestore(str(runs.Run(run_dir).backup / (prefix or "main"))),
    ]
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping,
                                                       mode="max"))
    try:
        with atomic.sigterm_as_interrupt():
            model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                      callbacks=callbacks, verbose=verbose)
    except KeyboardInterrupt:
        write_state(run_dir, "interrupted")
        raise TrainingInterrupted(run_dir) from None
    if not reload:
        return model
    return load_model(model_path)


def predict_logits(model: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``uint8[N, 28, 28]`` -> ``float32[N, C]`` logits of a Keras model."""
    x = images[..., None].astype(np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def write_report(model: keras.Model, splits: Splits, run_dir: Path, *, prefix: str = "",
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate on the test split and write metrics.json and the figures."""
    logits = predict_logits(model, splits.x_test)
    metrics = classification_report(logits, splits.y_test)
    metrics.update({"parameters": int(model.count_params()), **(extra or {})})
    atomic.write_json(run_dir / f"{prefix}{runs.METRICS_FILE}", metrics)
    history_path = run_dir / f"{prefix}{runs.HISTORY_JSON}"
    if history_path.is_file():
        plots.training_curves(runs.read_json(history_path, []),
                              run_dir / f"{prefix}training_curves.png")
    plots.confusion_matrix(np.array(metrics["confusion_matrix"]),
                           run_dir / f"{prefix}confusion_matrix.png")
    plots.sample_predictions(splits.x_test, splits.y_test, logits,
                             run_dir / f"{prefix}sample_predictions.png")
    plots.confidence_boxplot(splits.y_test, logits, run_dir / f"{prefix}confidence_boxplot.png")
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), expand_nested=False)
    summary = "\n".join(lines)
    atomic.write_text(run_dir / f"{prefix}summary.txt", summary + "\n")
    plots.architecture_diagram(model, run_dir / f"{prefix}architecture.png")
    write_explanations(model, splits, run_dir, prefix=prefix)
    return metrics


def write_explanations(model: keras.Model, splits: Splits, run_dir: Path, *,
                       prefix: str = "", count: int = 8) -> None:
    """``gradcam.png`` (Grad-CAM, or saliency for the MLP, of ``count`` test images) and, for
    convolutional models, ``feature_maps.png`` (the first test image's first and last
    stages)."""
    from fmnist_edge.train.explain import explain

    images, labels = splits.x_test[:count], splits.y_test[:count]
    if model.output_shape != (None, 10) or not len(images):
        return  # a class-split stage model: no 10-class explanation
    found = explain(model, images)
    plots.gradcam_grid(images, labels, found.heatmap, found.logits.argmax(1), found.method,
                       run_dir / f"{prefix}gradcam.png")
    if found.first_stage is not None:
        plots.feature_maps(images[0], found.first_stage[0], found.last_stage[0],
                           run_dir / f"{prefix}feature_maps.png")


def environment() -> dict[str, Any]:
    """Library versions and the machine (:func:`fmnist_edge.provenance.machine`) recorded
    with every run."""
    from fmnist_edge.provenance import machine

    return {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
            "numpy": np.__version__,
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")], **machine()}


def prepare(config: TrainConfig) -> tuple[tf.distribute.Strategy, str]:
    """Create the distribution strategy (first: a multi-worker one must exist before other
    TensorFlow work), seed everything and set the precision policy."""
    strategy = _strategy(config)
    keras.utils.set_random_seed(config.seed)
    policy = _precision_policy(config)
    keras.mixed_precision.set_global_policy(policy)
    return strategy, policy


def train(config: TrainConfig, *, data_dir: str | Path | None = None,
          runs_dir: str | Path = runs.DEFAULT_RUNS_DIR, run_dir: str | Path | None = None,
          verbose: int = 1) -> TrainResult:
    """Train ``config.arch`` on Fashion-MNIST and write a complete run folder.

    Args:
        config: resolved configuration (see :func:`fmnist_edge.train.config.recipe`).
        data_dir: folder with the IDX files (else searched: :func:`fmnist_edge.data.locate`).
        runs_dir: parent of ``<arch>/<run-id>/`` folders.
        run_dir: an existing run folder to resume (its config.json wins) or a new path.
        verbose: Keras verbosity.

    Returns:
        :class:`TrainResult` with the run folder, the test metrics and the wall time.

    Raises:
        fmnist_edge.data.DataError: missing or corrupt data.
        ValueError: invalid configuration.
        TrainingInterrupted: Ctrl-C or SIGTERM.
    """
    if config.class_split:
        from fmnist_edge.train.class_split import train_class_split

        return train_class_split(config, data_dir=data_dir, runs_dir=runs_dir,
                                 run_dir=run_dir, verbose=verbose)
    start = time.perf_counter()
    splits = load_splits(config, data_dir)
    kwargs = builder_kwargs(config)
    strategy, policy = prepare(config)
    if not is_chief(strategy):
        return _train_worker(config, splits, kwargs, strategy, run_dir, verbose)
    run_dir = Path(run_dir) if run_dir else runs.new_run_dir(config.arch, runs_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temps(run_dir)
    history_path = run_dir / runs.HISTORY_JSON
    earlier = runs.read_json(history_path, [])
    # Provenance is taken when a segment starts (the code that runs is the code loaded then);
    # a resumed run keeps its earlier segments' records.
    state_path = runs.Run(run_dir).state
    segments = (runs.read_json(state_path, {}).get("segments", [])
                if earlier and state_path.is_file() else [])
    segments.append({**provenance(), "precision_policy": policy})
    atomic.write_json(runs.Run(run_dir).config, config.to_dict())
    write_state(run_dir, "training", segments=segments)
    with strategy.scope():
        model = architectures.build(config.arch, **kwargs)
        fit(model, config, splits, run_dir, verbose=verbose, reload=False)
    best = load_model(runs.Run(run_dir).model)
    history = runs.read_json(history_path, [])
    resumed_at = resumed_epoch(earlier, history)
    # A resumed run also counts the epochs its earlier segments completed.
    train_time = (time.perf_counter() - start
                  + sum(h["epoch_time_s"] for h in earlier[:resumed_at]))
    metrics = write_report(best, splits, run_dir, extra={
        "arch": config.arch,
        "train_images": int(len(splits.x_train)),
        "val_images": int(len(splits.x_val)),
        "best_val_accuracy": max((h.get("val_accuracy", 0.0) for h in history), default=None),
        "epochs_run": len(history),
        "mean_epoch_time_s": float(np.mean([h["epoch_time_s"] for h in history])),
        "train_time_s": train_time,
        "resumed_at_epoch": resumed_at,
        "precision_policy": policy,
        "replicas": strategy.num_replicas_in_sync,
        "environment": environment(),
        "provenance": segments[-1],
        "segments": segments,
    })
    wall = time.perf_counter() - start
    shutil.rmtree(runs.Run(run_dir).backup, ignore_errors=True)
    write_state(run_dir, "finished", wall_time_s=wall)
    return TrainResult(run_dir, metrics, wall)


def resumed_epoch(earlier: list[dict], history: list[dict]) -> int:
    """The epoch a resumed segment started at: the number of leading history rows it kept.

    The resumable state (BackupAndRestore) is saved after the history at each epoch end, so a
    stop between the two leaves one history row more than the backup holds; the resumed
    segment repeats that epoch and rewrites its row (a new ``epoch_time_s`` at least). So the
    rows both lists share unchanged are the earlier segments' epochs.

    Args:
        earlier: ``history.json`` rows as they were before the segment.
        history: the rows after it.

    Returns:
        Count of earlier-segment epochs (0 for a fresh run).
    """
    kept = 0
    for before, after in zip(earlier, history):
        if before != after:
            break
        kept += 1
    return kept


def _train_worker(config: TrainConfig, splits: Splits, kwargs: dict, strategy,
                  run_dir: str | Path | None, verbose: int) -> TrainResult:
    """A non-chief worker of a multi-worker run: it trains its share in step with the chief,
    running the same callbacks (saving a model takes part in collective operations, so every
    worker saves, as TensorFlow's multi-worker guide says) into a temporary folder that is
    removed at the end; nothing is written where the chief writes."""
    import tempfile

    start = time.perf_counter()
    own = Path(tempfile.mkdtemp(prefix="fmnist-edge-worker-"))
    if run_dir and (Path(run_dir) / runs.BACKUP_DIR).is_dir():  # --resume: the chief's state
        shutil.copytree(Path(run_dir) / runs.BACKUP_DIR, own / runs.BACKUP_DIR)
    try:
        with strategy.scope():
            model = architectures.build(config.arch, **kwargs)
            fit(model, config, splits, own, verbose=verbose, reload=False)
    finally:
        shutil.rmtree(own, ignore_errors=True)
    return TrainResult(own, {"worker": True}, time.perf_counter() - start)


def resume(run_dir: str | Path, *, data_dir: str | Path | None = None, verbose: int = 1,
           mixed_precision: bool | None = None) -> TrainResult:
    """Continue an interrupted run from its last completed epoch, with its recipe.

    Args:
        mixed_precision: the arithmetic of the remaining epochs (``None``: as before). The
            recipe does not change, the float32 variables and optimizer state carry over;
            each segment records its precision policy (``segments`` of ``state.json`` and
            ``metrics.json``) and ``config.json`` the latest.

    Raises:
        fmnist_edge.runs.RunError: not a run folder (no config.json).
    """
    run_dir = Path(run_dir)
    config_path = runs.Run(run_dir).config
    if not config_path.is_file():
        raise runs.RunError(f"{run_dir} is not a run folder (no {runs.CONFIG_FILE})")
    config = TrainConfig.read(config_path)
    if mixed_precision is not None:
        config = dataclasses.replace(config, mixed_precision=mixed_precision)
    return train(config, data_dir=data_dir, run_dir=run_dir, verbose=verbose)
