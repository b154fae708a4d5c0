"""ONNX models through onnxruntime (CPU execution provider)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmnist_edge.contract import check_images
from fmnist_edge.runtime.base import ModelFileError, batched, check_io
from fmnist_edge.runtime.card import CARD_KEY, card_for
from fmnist_edge.runtime.quant import input_quantizer

_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(int8)": np.int8,
               "tensor(uint8)": np.uint8}


class OnnxRuntime:
    """An ``.onnx`` model (float or QDQ int8) on onnxruntime's CPU provider.

    Args:
        path: the model file.
        num_threads: intra-op threads (``None``: onnxruntime's default).
        max_batch: images per ``run`` (larger inputs are processed in chunks).
    """

    def __init__(self, path: str | Path, *, num_threads: int | None = None,
                 max_batch: int = 512):
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError('.onnx models need onnxruntime: pip install "fmnist-edge[onnx]"'
                              ) from exc
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, ...
            raise ModelFileError(
                f"{self.path}: onnxruntime {ort.__version__} cannot load it ({exc}); if the "
                "file is truncated or corrupt, export or download it again") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFileError(f"{self.path}: expected 1 input and 1 output, found "
                                 f"{len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        check_io(self.path, self._in.shape, self._out.shape)
        if self._in.type not in _ONNX_TYPES:
            raise ModelFileError(f"{self.path}: its input is {self._in.type}, not the contract's "
                                 f"float32 (or integer) pixels; re-export it")
        self.input_dtype = np.dtype(_ONNX_TYPES[self._in.type])
        # A model exported with a fixed batch size gets chunks of that size (the last one
        # padded with blank images), instead of failing on any other batch.
        fixed = self._in.shape[0]
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        self.max_batch = self.fixed_batch or max_batch
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = card_for(self.path, "onnx",
                             lambda: json.loads(meta[CARD_KEY]) if CARD_KEY in meta else None)
        self.input_scale, self.input_zero_point = 1.0, 0
        if self.input_dtype != np.float32:
            # onnxruntime does not expose the graph's quantization parameters: an integer
            # input's scale and zero point come from the model card (``io``), never assumed.
            io = self.card.extra.get("io", {}) if isinstance(self.card.extra, dict) else {}
            if "input_scale" not in io or "input_zero_point" not in io:
                raise ModelFileError(
                    f"{self.path}: its input is {self._in.type} but no model card records the "
                    "input scale and zero point (io.input_scale, io.input_zero_point); keep "
                    "its .json sidecar beside it, or export it with float32 input")
            self.input_scale = float(io["input_scale"])
            self.input_zero_point = int(io["input_zero_point"])
        self._quantize = input_quantizer(self.input_dtype, self.input_scale,
                                         self.input_zero_point)
        self._source, self._in_name, self._outputs = str(self.path), self._in.name, [self._out.name]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, 28, 28] -> float32[N, 10] logits."""
        return batched(check_images(images, source=self._source), self.max_batch,
                       self._run, source=self._source)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.fixed_batch and n < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, pad])
        out = self.session.run(self._outputs, {self._in_name: self._quantize(batch)})[0]
        return np.asarray(out, dtype=np.float32)[:n]
