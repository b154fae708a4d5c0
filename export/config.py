"""Typed, frozen export configuration; saved as ``export/export_config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fmnist_edge.export.granularity import CALIBRATION_METHODS, GRANULARITIES
from fmnist_edge.formats import FORMATS, INT8_SET
from fmnist_edge.train.config import ARCHITECTURES, validate

#: How the pruned layers share the sparsity (``compress.layer_sparsities``).
ALLOCATIONS = ("uniform", "erk")
#: Fine-tuning optimizers (``compress.fine_tune``).
OPTIMIZERS = ("adam", "sgd")
#: QDQ activation types of int8 ONNX models -> onnxruntime ``QuantType`` names. Which one
#: onnxruntime fuses into its integer kernels depends on the CPU and the graph, so the export
#: makes each and keeps the fastest that keeps the float model's predictions
#: (``export.make.choose``).
ONNX_ACTIVATION_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
#: Input/output types of the full-integer TFLite model.
INT8_IO = ("int8", "uint8")
#: How an int8 model's first convolution may be made: ``int8`` like every other layer, or
#: ``float`` (float32 weights and arithmetic between a dequantize and a quantize). A
#: convolution over one input channel gives int8 kernels too little to reduce over: on a
#: Xeon with AMX a 3x3 1 -> 32 convolution at 28x28 took 44.5 us in int8 against 8.6 us in
#: fp32 under LiteRT (benchmarks/results/experiments/conv_cost_xeon_amx.json).
FIRST_CONV_MODES = ("int8", "float")


@dataclass(frozen=True)
class ExportConfig:
    """Everything that determines an export. Why each default is what it is, measured on
    the validation split: ``benchmarks/results/experiments/README.md``.

    Attributes:
        formats: artifact formats to produce (names of ``fmnist_edge.formats.FORMATS``).
        sparsity: final magnitude-pruning sparsity of Conv2D/Dense kernels (0 skips pruning).
        prune_epochs: fine-tuning epochs while pruning (PolynomialDecay schedule, Zhu & Gupta
            2017, arXiv:1710.01878, as in tfmot's pruning guide).
        keep_ends_dense: leave the first and the last Conv2D/Dense layer dense and prune the
            others a little more, so the kernels together still reach ``sparsity`` (Gale et
            al. 2019, arXiv:1902.09574).
        sparsity_allocation: how the pruned layers share the sparsity: ``uniform`` (the
            same for each) or ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020,
            arXiv:1911.11134: large layers pruned more); see ``compress.layer_sparsities``.
        fold_batchnorm: before pruning, fold each BatchNorm that follows a Conv2D/Dense into
            its kernel and bias (``compress.fold_batchnorm``), so magnitude pruning ranks the
            weights the deployed model multiplies with rather than raw kernels whose channel
            scale the BatchNorm undoes.
        freeze_batchnorm: set every BatchNorm non-trainable, i.e. in inference mode, before
            pruning and QAT fine-tune the model (``compress.freeze_batchnorm``).
        qat_epochs: quantization-aware fine-tuning epochs (0 skips QAT: post-training only).
        lr: fine-tuning learning rate (cosine-decayed); fine-tuning moves the model's
            predictions even without pruning.
        optimizer: fine-tuning optimizer, ``adam`` or ``sgd`` (Nesterov momentum 0.9); see
            ``compress.fine_tune``.
        distill: fine-tune towards the float model's probabilities (knowledge distillation,
            Hinton et al. 2015, arXiv:1503.02531) instead of the labels, so the compressed
            model keeps the float model's predictions, not just its accuracy; the student
            then sees the clean training images the targets were computed on.
        distill_temperature: softening temperature T of the distillation targets and loss
            (Hinton et al. 2015, sec. 2); larger T matches more of the logit vector.
        batch_size: fine-tuning batch size.
        calibration_samples: training images in the representative dataset (calibration of
            int8 ranges the QAT model does not carry, and of onnxruntime static quantization).
        int8_io: ``int8`` or ``uint8`` input/output of the full-integer TFLite model.
        weight_granularity: int8 TFLite weights of the post-training model: ``channel`` (one
            scale per output channel, TFLite converter), ``auto`` (ai-edge-quantizer; per-tensor
            for each convolution / fully connected layer whose per-tensor rounding error is at
            most 3x its per-channel error, per-channel for the rest and for every depthwise
            convolution; see ``export.granularity``) or ``tensor`` (per-tensor for every
            convolution / fully connected layer, depthwise per-channel). ``auto`` and
            ``tensor`` need int8 I/O.
        calibration_method: how ai-edge-quantizer accumulates activation ranges over the
            representative dataset when ``weight_granularity`` is not ``channel``: ``minmax``
            (global min and max, as the TFLite converter and onnxruntime calibrate) or
            ``moving_average`` (its default moving average of per-image ranges); see
            ``export.granularity.CALIBRATION_METHODS``.
        onnx_activations: QDQ activation types of the int8 ONNX model (``int8``,
            ``uint8``; ``export.convert.ONNX_ACTIVATION_TYPES``). Each is made and timed: which
            one onnxruntime fuses into integer kernels depends on the CPU and the graph
            (uint8 was 22 % faster for the mlp and 5 % for the cnn on an AVX2 EPYC:
            benchmarks/results/experiments/onnx_activation_types.json).
        first_conv: the ways to make the first convolution of the int8 models (``int8``,
            ``float``; :data:`FIRST_CONV_MODES`); with both, an int8 artifact is made each
            way (``float``: post-training quantization with that one layer left in float,
            ways named ``ptq/float-first``, ``ptq/uint8/float-first``, ...) and the rule of
            ``agreement_slack`` and ``min_speedup`` keeps one. A model without a convolution,
            and an int8 TFLite with uint8 I/O, is made the ``int8`` way.
        agreement_slack: choosing among an artifact's int8 ways, a way whose validation
            agreement with the float model is at most this much (a fraction) below the most
            faithful way's is chosen instead when it is at least ``min_speedup`` times faster
            at batch 1 (``export.make.choose``); 0 chooses by agreement only.
        min_speedup: the batch-1 speed-up that a way within ``agreement_slack`` needs to be
            chosen over the most faithful way (a smaller one is within timing noise).
        max_accuracy_drop: gate: the largest test top-1 loss of an int8 artifact against the
            float Keras model, in percentage points.
        max_class_drop: gate: the largest loss of any one class's top-1 (recall, 1,000 test
            images each) against the float Keras model, in percentage points.
        float_atol: gate: the largest |logit| difference of a float32 artifact vs Keras,
            absolute for |logit| <= 1 and relative above (``export.parity.scaled_logit_diff``).
        train_limit: fine-tune on this many training images only (0: all but validation).
        val_size: validation images held out (used to choose each int8 method).
        latency_runs: timed batch-1 calls per artifact for p50/p90 latency.
        seed: seed of sampling and fine-tuning.
    """

    formats: tuple[str, ...] = INT8_SET
    sparsity: float = 0.5
    prune_epochs: int = 4
    keep_ends_dense: bool = True
    sparsity_allocation: str = "erk"
    fold_batchnorm: bool = True
    freeze_batchnorm: bool = True
    qat_epochs: int = 2
    lr: float = 1e-4
    optimizer: str = "adam"
    distill: bool = True
    distill_temperature: float = 1.0
    batch_size: int = 128
    calibration_samples: int = 500
    int8_io: str = "int8"
    weight_granularity: str = "auto"
    calibration_method: str = "minmax"
    onnx_activations: tuple[str, ...] = ("int8", "uint8")
    first_conv: tuple[str, ...] = FIRST_CONV_MODES
    agreement_slack: float = 0.001
    min_speedup: float = 1.05
    max_accuracy_drop: float = 0.5
    max_class_drop: float = 2.0
    float_atol: float = 1e-4
    train_limit: int = 0
    val_size: int = 5000
    latency_runs: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        checks = [
            (not unknown, f"unknown formats {unknown}; choose from {sorted(FORMATS)}"),
            (0 <= self.sparsity < 1, "sparsity must be in [0, 1)"),
            (self.prune_epochs >= 0 and self.qat_epochs >= 0, "epochs must be >= 0"),
            (self.sparsity == 0 or self.prune_epochs > 0,
             "pruning needs --prune-epochs >= 1 (or --sparsity 0)"),
            (self.sparsity_allocation in ALLOCATIONS,
             f"--sparsity-allocation must be one of {', '.join(ALLOCATIONS)}"),
            (self.int8_io in INT8_IO, f"--int8-io must be one of {', '.join(INT8_IO)}"),
            (self.optimizer in OPTIMIZERS,
             f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.weight_granularity in GRANULARITIES,
             f"weight_granularity must be one of {', '.join(GRANULARITIES)}"),
            (self.weight_granularity == "channel" or self.int8_io == "int8",
             "uint8 I/O needs --weight-granularity channel (the TFLite converter)"),
            (self.calibration_method in CALIBRATION_METHODS,
             f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}"),
            (bool(self.onnx_activations)
             and set(self.onnx_activations) <= set(ONNX_ACTIVATION_TYPES),
             f"--onnx-activations must be one or more of {', '.join(ONNX_ACTIVATION_TYPES)}, "
             f"got {','.join(self.onnx_activations) or 'none'}"),
            (bool(self.first_conv) and set(self.first_conv) <= set(FIRST_CONV_MODES),
             f"--first-conv must be one or more of {', '.join(FIRST_CONV_MODES)}, "
             f"got {','.join(self.first_conv) or 'none'}"),
            (0 <= self.agreement_slack < 1, f"--agreement-slack must be in [0, 1), got "
                                            f"{self.agreement_slack}"),
            (self.min_speedup >= 1, f"--min-speedup must be >= 1, got {self.min_speedup}"),
            (self.calibration_samples >= 1, "calibration_samples must be >= 1"),
            (self.max_accuracy_drop >= 0, "max_accuracy_drop must be >= 0"),
            (self.max_class_drop >= 0, f"--max-class-drop must be >= 0, got "
                                       f"{self.max_class_drop}"),
            (self.distill_temperature > 0, "distill_temperature must be > 0"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.latency_runs >= 1, f"--latency-runs must be >= 1, got {self.latency_runs}"),
            (self.train_limit >= 0, f"--train-limit must be >= 0, got {self.train_limit}"),
            (0 <= self.val_size < 60000, f"--val-size must be in [0, 60000), got "
                                         f"{self.val_size}"),
            (self.float_atol > 0, f"--float-atol must be > 0, got {self.float_atol}"),
        ]
        validate(checks)

    def calibration_images(self, train_images: np.ndarray) -> np.ndarray:
        """The representative dataset: ``calibration_samples`` images (all, if fewer) drawn
        without replacement from ``uint8[N, 28, 28]`` fine-tuning images with ``seed``.

        Returns:
            ``uint8[M, 28, 28]``, M = min(calibration_samples, N).
        """
        rng = np.random.default_rng(self.seed)
        count = min(self.calibration_samples, len(train_images))
        return train_images[rng.choice(len(train_images), count, replace=False)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def resolve(cls, arch: str | None = None, **overrides) -> ExportConfig:
        """The defaults, then the architecture's own (its registry entry's ``export``, e.g.
        ``resnet20``'s), then ``overrides``; ``None`` means "the default", so the CLI passes
        ``None`` for every option not given and no default is written twice.

        Args:
            arch: the source run's architecture (``None`` or an unknown name: the defaults).
            **overrides: ``ExportConfig`` fields.

        Raises:
            ValueError: an unknown field or an invalid value (the message names the option).
        """
        unknown = set(overrides) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown export settings {sorted(unknown)}; choose from {FIELDS}")
        entry = ARCHITECTURES.get(arch) if arch else None
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(cls(), **{**(entry.export if entry else {}), **given})


#: The names of the settings (the CLI's options and the experiments' keys).
FIELDS = tuple(f.name for f in dataclasses.fields(ExportConfig))


def field_defaults(field: str) -> tuple[str, dict[str, str]]:
    """The default of one ``ExportConfig`` field as the CLI shows it (a tuple joined with
    commas), and the architectures whose registry entry sets another, in registry order;
    ``fmnist-edge export --help`` and the README's option table both print these.

    Returns:
        ``(default, {arch: value})``, both as text.

    Raises:
        AttributeError: ``field`` is not an ``ExportConfig`` field.
    """
    def shown(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    return (shown(getattr(ExportConfig(), field)),
            {arch: shown(entry.export[field]) for arch, entry in ARCHITECTURES.items()
             if field in entry.export})
