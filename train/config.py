"""Typed, frozen training configuration and the default recipe of every architecture.

CLI options map one-to-one onto :class:`TrainConfig` fields; the resolved config is saved as
``config.json`` in every run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle", "triangular")
DISTRIBUTE = ("none", "mirrored", "multiworker")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation; every part can be switched off (0 / False).

    Attributes:
        shift_px: max random translation in pixels (integer shifts: a random crop of the
            zero-padded image).
        flip: random horizontal flip (p = 0.5).
        rotation_deg: max random rotation, degrees.
        zoom: max relative zoom, e.g. 0.1 for [0.9, 1.1].
        shear_deg: max random shear, degrees.
        erasing_prob: probability of random erasing (Zhong et al. 2017, arXiv:1708.04896:
            a rectangle of 2-40 % of the area, aspect 0.3-3.3, filled with uniform noise).
        appearance: probability that an image's tones and texture are randomized (gamma,
            gain, stripe/noise texture, inverted tones; its shape is kept:
            ``fmnist_edge.train.dataset.APPEARANCE_STEPS``), so that the model leans on the
            silhouette, which survives a real photo's conversion, more than on grey levels.
    """

    shift_px: int = 2
    flip: bool = True
    rotation_deg: float = 0.0
    zoom: float = 0.0
    shear_deg: float = 0.0
    erasing_prob: float = 0.0
    appearance: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.shift_px or self.flip or self.rotation_deg or self.zoom
                    or self.shear_deg or self.erasing_prob or self.appearance)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        arch: registered architecture name.
        epochs: maximum number of epochs.
        batch_size: global batch size (split across replicas under ``mirrored``).
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        lr: peak learning rate.
        schedule: ``constant``, ``cosine`` (linear warm-up then cosine decay), ``onecycle``
            (Smith & Topin 2017, arXiv:1708.07120) or ``triangular`` (cyclical learning rate,
            Smith 2017, arXiv:1506.01186, as in the MobileNetV2 seed).
        warmup_epochs: linear warm-up length for ``cosine``.
        min_lr: floor of ``cosine`` / lower bound of ``triangular``.
        cycle_epochs: half-cycle length (``step_size``) of ``triangular``, in epochs.
        weight_decay: decoupled weight decay for ``adamw`` / ``sgd`` (Loshchilov & Hutter 2019).
        l2: L2 penalty ``l2 * sum(w**2)`` on kernels (``mlp``, ``cnn``, the ResNets).
        label_smoothing: label smoothing factor (Szegedy et al. 2016).
        early_stopping: patience in epochs on validation accuracy; 0 disables it.
        val_size: validation images held out (stratified, seeded) from the 60,000 training
            images; the test set is only used for the final evaluation.
        train_limit: use only this many training images (stratified); 0 uses all.
        seed: seed of the split, initialisation, shuffling and augmentation.
        augment: augmentation settings.
        input_size: resize side for keras.applications backbones (``None``: builder default).
        weights: ``none``, ``imagenet`` or a weights-file path (backbones only).
        dropout: dropout before the classifier (``None``: builder default).
        distribute: ``none``, ``mirrored`` (tf.distribute.MirroredStrategy, the devices of
            one machine) or ``multiworker`` (tf.distribute.MultiWorkerMirroredStrategy over
            the machines that ``$TF_CONFIG`` lists; the chief writes the run folder).
        mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU. The saved model is
            evaluated, exported and used as a teacher in float32
            (:func:`fmnist_edge.train.keras_shim.float32_model`).
        class_split: the CNN seed's two-stage recipe (classes 0-4, then a new head on 5-9).
        photo_augment: fraction (0-1) of each training batch taken from the photo pool
            (:mod:`fmnist_edge.train.photo_pool`: training images rendered as phone photos
            and converted back by ``predict``'s conversion); 0 disables it.
        photo_pool_size: training images rendered into the photo pool (capped at the
            training set's size).
        teacher: knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531):
            comma-separated run folders or ``.keras`` files whose averaged logits (an
            ensemble when several) give the soft targets; ``""`` trains on labels only.
        distill_temperature: softening temperature T of the teacher's and the student's
            logits (Hinton et al. use T in 2-20; 4 is the common choice for small students).
        distill_alpha: weight of the soft-target loss (scaled by T**2, as in the paper);
            ``1 - alpha`` weighs the cross-entropy with the labels.
        teacher_mixed_precision: compute the teachers' logits under the mixed policy
            (mixed_bfloat16 on CPU) while the student keeps ``mixed_precision``'s policy: on a
            CPU with bfloat16 matrix units (AMX) the teacher's share of each step falls to
            about half; its logits move by a few hundredths (bfloat16 keeps 8 bits of
            mantissa), before the division by T.
    """

    arch: str
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    cycle_epochs: float = 4.0
    weight_decay: float = 0.0
    l2: float = 0.0
    label_smoothing: float = 0.0
    early_stopping: int = 0
    val_size: int = 5000
    train_limit: int = 0
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    input_size: int | None = None
    weights: str = "none"
    dropout: float | None = None
    distribute: str = "none"
    mixed_precision: bool = False
    class_split: bool = False
    photo_augment: float = 0.0
    photo_pool_size: int = 30000
    teacher: str = ""
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9
    teacher_mixed_precision: bool = False

    def __post_init__(self) -> None:
        a = self.augment
        checks = [
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}"),
            (self.distribute in DISTRIBUTE, f"--distribute must be one of {DISTRIBUTE}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (self.min_lr >= 0, f"--min-lr must be >= 0, got {self.min_lr}"),
            (self.cycle_epochs > 0, f"--cycle-epochs must be > 0, got {self.cycle_epochs}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.l2 >= 0, f"--l2 must be >= 0, got {self.l2}"),
            (0 <= self.label_smoothing < 1,
             f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.weight_decay == 0 or self.optimizer != "adam",
             "--weight-decay needs --optimizer adamw or sgd (Adam's L2 is --l2)"),
            (self.early_stopping >= 0,
             f"--early-stopping must be >= 0, got {self.early_stopping}"),
            # The training file holds 60,000 images; a class needs at least one left.
            (0 <= self.val_size <= 59990, f"--val-size must be in [0, 59990], got "
                                          f"{self.val_size}"),
            (self.train_limit >= 0, f"--train-limit must be >= 0, got {self.train_limit}"),
            (0 <= a.shift_px <= 13, f"--shift-px must be in [0, 13], got {a.shift_px}"),
            (0 <= a.rotation_deg <= 180,
             f"--rotation-deg must be in [0, 180], got {a.rotation_deg}"),
            (0 <= a.zoom < 1, f"--zoom must be in [0, 1) (0.1 means 0.9-1.1), got {a.zoom}"),
            (0 <= a.shear_deg < 60, f"--shear-deg must be in [0, 60), got {a.shear_deg}"),
            (0 <= a.erasing_prob <= 1, f"--erasing-prob must be in [0, 1], got "
                                       f"{a.erasing_prob}"),
            (0 <= a.appearance <= 1, f"--appearance must be in [0, 1], got {a.appearance}"),
            (self.dropout is None or 0 <= self.dropout < 1,
             f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.input_size is None or 28 <= self.input_size <= 512,
             f"--input-size must be in [28, 512], got {self.input_size}"),
            (0 <= self.photo_augment <= 1,
             f"--photo-augment must be in [0, 1], got {self.photo_augment}"),
            (self.photo_pool_size >= 1,
             f"--photo-pool-size must be >= 1, got {self.photo_pool_size}"),
            (self.distill_temperature > 0,
             f"--distill-temperature must be > 0, got {self.distill_temperature}"),
            (0 <= self.distill_alpha <= 1,
             f"--distill-alpha must be in [0, 1], got {self.distill_alpha}"),
            (not (self.teacher and self.class_split),
             "--teacher does not combine with --class-split"),
        ]
        validate(checks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["augment"] = AugmentConfig(**data.get("augment", {}))
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> TrainConfig:
        from fmnist_edge.runs import RunError, read_json

        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise RunError(f"{path}: not a valid training config ({exc}); restore it, or "
                           "start a new run") from exc


def validate(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


_BACKBONE_AUGMENT = AugmentConfig(shift_px=2, flip=True)


@dataclass(frozen=True)
class Architecture:
    """One registry entry: the builder, its fixed arguments, the default recipe and whether
    it is a ``keras.applications`` backbone, together (as timm keeps a model's defaults
    beside its builder). Light: the builder is named, and imported only to build.

    Attributes:
        builder: a function of ``fmnist_edge.train.architectures`` returning the model.
        recipe: the default :class:`TrainConfig` (``fmnist-edge train ARCH``).
        backbone: takes ``input_size`` and ``weights`` (not ``l2``).
        kwargs: fixed builder arguments (e.g. ResNet-8's one block per stage).
        export: this architecture's export defaults where they differ from
            ``fmnist_edge.export.config.ExportConfig``'s (``fmnist-edge export RUN`` applies
            them when the run's ``config.json`` names the architecture; options given on the
            command line still win).
    """

    builder: str
    recipe: TrainConfig
    backbone: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)


def _backbone(application: str, preprocessing: str, recipe: TrainConfig) -> Architecture:
    return Architecture("build_backbone", recipe, backbone=True,
                        kwargs={"application": application, "preprocessing": preprocessing,
                                "name": recipe.arch})


#: The registry: adding an architecture is one entry here (and its builder) plus its test.
ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture("build_mlp", TrainConfig(
        arch="mlp", epochs=40, batch_size=256, optimizer="adamw", lr=2e-3, schedule="cosine",
        weight_decay=1e-4, label_smoothing=0.1,
        augment=AugmentConfig(shift_px=1, flip=True))),
    "cnn": Architecture("build_cnn", TrainConfig(
        arch="cnn", epochs=50, batch_size=256, optimizer="adamw", lr=3e-3, schedule="onecycle",
        weight_decay=5e-4, label_smoothing=0.1,
        augment=AugmentConfig(shift_px=2, flip=True, erasing_prob=0.3))),
    # Zhong et al.'s Fashion-MNIST recipe (github.com/zhunzhong07/Random-Erasing, README and
    # issue #10: 95.55 % with random erasing): SGD momentum 0.9, lr 0.1, weight decay 5e-4,
    # batch 128, 300 epochs, pad-4 crop, flip, random erasing p 0.5; cosine decay here instead
    # of the step schedule (/10 at 150 and 225). Selected on the validation split. Their
    # "weight decay 5e-4" is PyTorch's coupled decay (5e-4 * w added to the gradient, then
    # through the momentum): the same is an L2 penalty of 2.5e-4 * sum(w**2) on the kernels.
    # Keras's decoupled SGD weight decay of 5e-4 would be 1 / (1 - 0.9) = 10x weaker.
    # Exported without pruning, by post-training int8 only: on the validation split the
    # default recipe (50 % pruning, 4 + 2 fine-tuning epochs) kept 98.84 % agreement with the
    # float model (int8 TFLite 98.76 %), post-training int8 of the unpruned model 99.64 %
    # (int8 ONNX 99.66 %); #16 asks for 99.5 % (a checkpoint at epoch 226:
    # benchmarks/results/experiments/prune_agreement_resnet20.json).
    "resnet20": Architecture("build_resnet", TrainConfig(
        arch="resnet20", epochs=300, batch_size=128, optimizer="sgd", lr=0.1,
        schedule="cosine", warmup_epochs=1.0, l2=2.5e-4,
        augment=AugmentConfig(shift_px=4, flip=True, erasing_prob=0.5)),
        export={"sparsity": 0.0, "qat_epochs": 0}),
    # ResNet-8 (one basic block per stage), about 78K parameters and 9.3 MMAC: its int8 TFLite
    # stays under 100 KB, but at 28x28 and 16 channels its batch-1 latency is that of the
    # cnn (1.11x under LiteRT, 0.71x under onnxruntime, untrained probe:
    # benchmarks/results/experiments/edge_candidates_xeon_amx.json), so it is not the edge
    # model. Kept for the distillation comparison with the literature's ResNets.
    "resnet8": Architecture("build_resnet", TrainConfig(
        arch="resnet8", epochs=300, batch_size=128, optimizer="sgd", lr=0.1,
        schedule="cosine", warmup_epochs=1.0, l2=2.5e-4,
        augment=AugmentConfig(shift_px=4, flip=True, erasing_prob=0.5)),
        kwargs={"blocks": 1, "name": "resnet8"}),
    # A fast edge candidate: the cnn's design with a stride-2 first convolution (two stages
    # at 14x14 and 7x7, 32 and 64 filters): 66K parameters, 4.6 MMAC, a 74 KB int8 TFLite and
    # a quarter of the cnn's batch-1 latency (the same probe); the cnn's recipe. It reached
    # 91.74 % (benchmarks/results/train_edgecnn.json), under the 94.0 % the edge model of
    # #16 needs; --teacher RUN (knowledge distillation) is the next thing to try.
    "edgecnn": Architecture("build_cnn", TrainConfig(
        arch="edgecnn", epochs=50, batch_size=256, optimizer="adamw", lr=3e-3,
        schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1,
        augment=AugmentConfig(shift_px=2, flip=True, erasing_prob=0.3)),
        kwargs={"widths": (32, 64), "stem_stride": 2, "name": "edgecnn"}),
    # edgecnn with a wider 14x14 stage (48 filters): 87K parameters, 7.3 MMAC, a 97 KB int8
    # TFLite (under #16's 100 KB) at 0.28x the cnn's LiteRT batch-1 latency (untrained
    # probe, benchmarks/results/experiments/edge_candidates_wide_xeon_amx.json). Small models
    # underfit the cnn's regularization (edgecnn: 90.5 % train top-1 under augmentation
    # against 92.0 % validation), so no dropout and no random erasing. 100 epochs: test
    # top-1 93.41 % against 92.85 % after 50 (benchmarks/results/train_edgecnn48.json,
    # experiments/edgecnn48_50_epochs/). Exported without pruning, by post-training int8
    # only (an int8 TFLite stores pruned weights densely: same size): on the validation split
    # the default recipe (50 % pruning, 4 + 2 epochs) kept 93.66 % top-1 as int8 TFLite
    # (agreement with the float model 98.80 %), post-training int8 of the unpruned model
    # 93.74 % (99.70 %), the float model 93.84 %
    # (benchmarks/results/experiments/prune_agreement_edgecnn48.json).
    "edgecnn48": Architecture("build_cnn", TrainConfig(
        arch="edgecnn48", epochs=100, batch_size=256, optimizer="adamw", lr=3e-3,
        schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, dropout=0.0,
        augment=AugmentConfig(shift_px=2, flip=True, erasing_prob=0.0)),
        kwargs={"widths": (48, 64), "stem_stride": 2, "name": "edgecnn48"},
        export={"sparsity": 0.0, "qat_epochs": 0}),
    # keras.applications backbones with the input normalisation their ImageNet weights
    # expect (keras.applications `preprocess_input` docs: "tf" scales to [-1, 1], "caffe"
    # subtracts the ImageNet BGR means).
    "mobilenetv2": _backbone("MobileNetV2", "tf", TrainConfig(
        arch="mobilenetv2", epochs=30, batch_size=128, optimizer="adamw", lr=1e-3,
        schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, input_size=40,
        augment=_BACKBONE_AUGMENT)),
    "resnet50": _backbone("ResNet50", "caffe", TrainConfig(
        arch="resnet50", epochs=15, batch_size=128, optimizer="adamw", lr=1e-3,
        schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, input_size=32,
        augment=_BACKBONE_AUGMENT)),
    "vgg16": _backbone("VGG16", "caffe", TrainConfig(
        arch="vgg16", epochs=10, batch_size=128, optimizer="sgd", lr=2e-2,
        schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, input_size=32,
        augment=_BACKBONE_AUGMENT)),
}

#: The default recipe of every architecture (reached the bars in benchmarks/results/).
RECIPES: dict[str, TrainConfig] = {name: a.recipe for name, a in ARCHITECTURES.items()}


#: Every field a training option can set: the run's and its augmentation's.
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig)) + tuple(
    f.name for f in dataclasses.fields(AugmentConfig))


def recipe(arch: str, **overrides: Any) -> TrainConfig:
    """The default recipe of ``arch`` with ``overrides`` (fields set to ``None`` are ignored).

    Raises:
        ValueError: unknown architecture or field, or an invalid value.
    """
    if arch not in RECIPES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(RECIPES)}")
    base = RECIPES[arch]
    augment_fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    aug = {k: v for k, v in overrides.items() if k in augment_fields and v is not None}
    top = {k: v for k, v in overrides.items() if k not in augment_fields and v is not None}
    unknown = set(top) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    if aug:
        top["augment"] = dataclasses.replace(base.augment, **aug)
    return dataclasses.replace(base, **top)


def builder_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments for the architecture builder, refusing options it does not take.

    Raises:
        ValueError: a backbone-only option (input size, weights) given to mlp/cnn, or
            ``l2`` given to a backbone.
    """
    kwargs: dict[str, Any] = {}
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    if ARCHITECTURES[config.arch].backbone:
        if config.l2:
            raise ValueError(f"--l2 is not supported for {config.arch}; use --weight-decay")
        if config.input_size is not None:
            kwargs["input_size"] = config.input_size
        kwargs["weights"] = config.weights
    else:
        if config.input_size is not None or config.weights != "none":
            raise ValueError(f"--input-size and --weights apply to keras.applications "
                             f"backbones only, not {config.arch}")
        if config.l2:
            kwargs["l2"] = config.l2
    return kwargs
