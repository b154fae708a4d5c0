"""TFLite models through LiteRT (``ai_edge_litert``), falling back to ``tflite_runtime`` and,
only when neither is installed, to TensorFlow's deprecated ``tf.lite.Interpreter``."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from fmnist_edge.contract import IMAGE_SIZE, check_images
from fmnist_edge.quiet import quiet_native_stderr
from fmnist_edge.runtime.base import ModelFileError, batched, check_io, usable_cores
from fmnist_edge.runtime.card import CARD_KEY, card_for
from fmnist_edge.runtime.quant import input_quantizer, output_dequantizer

#: Interpreter classes tried in order: (module, attribute).
INTERPRETERS = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow.lite", "Interpreter"),
)


def embedded_card(path: Path) -> dict | None:
    """The model card stored in the TFLite metadata entry ``fmnist_edge_card`` (JSON bytes,
    written by the export), read with LiteRT's generated flatbuffer schema
    (``ai_edge_litert.schema_py_generated``); ``None`` when absent or unreadable."""
    try:
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == CARD_KEY.encode():
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    except Exception:  # no LiteRT schema, or metadata that is not our JSON card
        return None
    return None


def interpreter_class():
    """The first importable TFLite interpreter class.

    Raises:
        ImportError: none installed (names the extra to install).
    """
    for module, attr in INTERPRETERS:
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError:
            continue
    raise ImportError('.tflite models need LiteRT: pip install "fmnist-edge[litert]"')


class LiteRTRuntime:
    """A ``.tflite`` model; float, fp16, dynamic-range or full-integer (int8/uint8 I/O).

    Args:
        path: the model file.
        num_threads: interpreter threads (``None``: one per CPU).
        max_batch: images per ``invoke`` (larger inputs are processed in chunks).
    """

    def __init__(self, path: str | Path, *, num_threads: int | None = None,
                 max_batch: int = 256):
        self.path = Path(path)
        cls = interpreter_class()
        if num_threads is None:
            # LiteRT's own default is one thread; one per core doubled batch-64 throughput
            # here and held up with another process on a core, unlike onnxruntime's pool
            # (benchmarks/results/threads_under_load_<cpu>.json).
            num_threads = usable_cores()
        try:
            with quiet_native_stderr():  # LiteRT's "INFO: Created ... XNNPACK delegate"
                self.interpreter = cls(model_path=str(self.path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad flatbuffers
            raise ModelFileError(f"{self.path}: not a valid TFLite model ({exc}); the file is "
                                 "corrupt or truncated: export or download it again") from exc
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFileError(f"{self.path}: expected 1 input and 1 output, found "
                                 f"{len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        in_shape = list(self._in["shape"])
        check_io(self.path, in_shape, self._out["shape"])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.input_scale, self.input_zero_point = self._in["quantization"]
        self.output_scale, self.output_zero_point = self._out["quantization"]
        self._quantize = input_quantizer(self.input_dtype, self.input_scale,
                                         self.input_zero_point)
        integer_output = np.dtype(self._out["dtype"]).kind in "iu"
        if integer_output and not (np.isfinite(self.output_scale) and self.output_scale > 0):
            raise ModelFileError(f"{self.path}: its integer output has scale "
                                 f"{self.output_scale}, not a positive finite number; the "
                                 "model is broken: export it again")
        self._dequantize = output_dequantizer(self._out["dtype"], self.output_scale,
                                              self.output_zero_point)
        # integer codes times a finite scale are finite: no NaN check per call
        self._check_finite = not integer_output
        self._source = str(self.path)
        self._in_index, self._out_index = self._in["index"], self._out["index"]
        self.max_batch = max_batch
        self._batch = int(in_shape[0])
        self.card = card_for(self.path, "tflite", lambda: embedded_card(self.path))

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"], [n, IMAGE_SIZE, IMAGE_SIZE, 1])
            self.interpreter.allocate_tensors()
            self._batch = n

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, 28, 28] -> float32[N, 10] logits (dequantized for integer outputs)."""
        return batched(check_images(images, source=self._source), self.max_batch,
                       self._invoke, source=self._source, check_finite=self._check_finite)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self._resize(len(batch))
        self.interpreter.set_tensor(self._in_index, self._quantize(batch))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._out_index))
