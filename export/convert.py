"""Conversion of Keras models to TFLite (TFLite converter) and ONNX (tf2onnx,
onnxruntime.quantization), and embedding of the model card in each artifact."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import numpy as np

from fmnist_edge.contract import IMAGE_SIZE
from fmnist_edge.export.config import ONNX_ACTIVATION_TYPES
from fmnist_edge.runtime.card import CARD_KEY
from fmnist_edge.train.keras_shim import keras, tf

log = logging.getLogger(__name__)

ONNX_OPSET = 17


def representative_dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """TFLite representative dataset: one ``float32[1, 28, 28, 1]`` pixel batch (0-255) per
    calibration image (TFLite post-training quantization guide)."""
    def generate():
        for image in images:
            yield [image[None, ..., None].astype(np.float32)]

    return generate


def to_tflite(model: keras.Model, kind: str, calibration: np.ndarray | None = None,
              int8_io: str = "int8", sparse_encoding: bool = False) -> bytes:
    """Convert with the TFLite converter.

    Args:
        model: float Keras model (``fp32``, ``fp16``, ``dynamic``) or QAT model (``int8``).
        kind: ``fp32``, ``fp16`` (float16 weights), ``dynamic`` (dynamic-range int8 weights)
            or ``int8`` (full-integer, int8/uint8 I/O; ranges the QAT model lacks are
            calibrated on ``calibration``).
        calibration: ``uint8[M, 28, 28]`` representative images (``int8`` only).
        int8_io: ``int8`` or ``uint8`` model input/output type (``int8`` only).
        sparse_encoding: also store sparse constant tensors in TFLite's compressed sparse
            format (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``); smaller only when the index
            overhead is less than the zeros saved (benchmarks/sparse_encoding.py). Measured
            here: a sparse int8 FullyConnected fails to prepare in LiteRT's XNNPACK delegate,
            so use it for convolutional models only.

    Returns:
        The flatbuffer bytes.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind == "int8":
        if calibration is None:
            raise ValueError("int8 conversion needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8 if int8_io == "int8" else tf.uint8
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    elif kind != "fp32":
        raise ValueError(f"unknown TFLite kind {kind!r}")
    if sparse_encoding:
        converter.optimizations = [*converter.optimizations,
                                   tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def add_tflite_metadata(flatbuffer: bytes, card: dict) -> bytes:
    """Return ``flatbuffer`` with the card stored as a TFLite metadata entry (name
    ``fmnist_edge_card``, JSON bytes), using TensorFlow's flatbuffer_utils."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(card, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = CARD_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def to_onnx(model: keras.Model, *, opset: int = ONNX_OPSET):
    """Convert with tf2onnx using an explicit ``float32[N, 28, 28, 1]`` input signature named
    ``pixels``; the graph is validated with ``onnx.checker``.

    Returns:
        ``onnx.ModelProto``.
    """
    import onnx
    import tf2onnx

    spec = (tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    onnx.checker.check_model(proto)
    return proto


class _CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over uint8 images (batches of 32)."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 32):
        self._batches = iter([
            {input_name: images[i:i + batch, ..., None].astype(np.float32)}
            for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)


#: Largest magnitude of an int8 ONNX weight: 7 bits (onnxruntime's ``reduce_range``).
#: onnxruntime's x86 int8 kernels without VNNI (AVX2, AVX-512 without VNNI) multiply uint8
#: activations by int8 weights with VPMADDUBSW, which adds each pair of products in int16 and
#: saturates: 2 x 255 x 127 = 64,770 does not fit, 2 x 255 x 64 = 32,640 does (onnxruntime
#: docs, "Quantize ONNX models", sections "Reduce range" and "When and why do I need to try
#: U8U8?"). Measured on an AVX2 EPYC, the cnn's per-channel 8-bit weights lose 1.1 points of
#: top-1 there and nothing on a VNNI CPU, so the export's own parity gate could not see it;
#: 7-bit weights keep the float model's accuracy on both
#: (benchmarks/results/experiments/onnx_int8_saturation_avx2.json).
ONNX_WEIGHT_MAX = 64


def first_conv_node(proto) -> str | None:
    """Name of the first ``Conv`` node (in the graph's topological order) of an
    ``onnx.ModelProto``, or ``None`` when it has none."""
    return next((node.name for node in proto.graph.node if node.op_type == "Conv"), None)


def onnx_int8_static(float_proto, calibration: np.ndarray, work_dir, *,
                     reduce_range: bool = True, activation_type: str = "int8",
                     float_first_conv: bool = False):
    """Static QDQ int8 quantization with onnxruntime.quantization.quantize_static.

    Per-channel int8 weights in 7 bits (``reduce_range``, see :data:`ONNX_WEIGHT_MAX`: exact
    on every x86 CPU, not only those with VNNI), ``activation_type`` activations (a key of
    ``export.config.ONNX_ACTIVATION_TYPES``), MinMax calibration on ``calibration``
    (``uint8[M, 28, 28]``; onnxruntime docs, "Quantize ONNX models", QDQ format recommended
    for CPU). ``reduce_range=False`` gives 8-bit weights (for the comparison in
    benchmarks/onnx_saturation.py). With ``float_first_conv`` the first ``Conv`` node
    (:func:`first_conv_node` of the pre-processed graph) is left in float
    (``nodes_to_exclude``).

    Returns:
        ``onnx.ModelProto`` of the quantized model.

    Raises:
        ValueError: an unknown ``activation_type``, or ``float_first_conv`` for a graph
            without a convolution.
    """
    if activation_type not in ONNX_ACTIVATION_TYPES:
        raise ValueError(f"activation_type {activation_type!r}: choose from "
                         f"{', '.join(ONNX_ACTIVATION_TYPES)}")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = work_dir / "float.onnx"
    pre = work_dir / "float_pre.onnx"
    dst = work_dir / "int8.onnx"
    onnx.save(float_proto, src)
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    excluded = []
    if float_first_conv:
        first = first_conv_node(onnx.load(pre))
        if first is None:
            raise ValueError("float_first_conv: the graph has no Conv node")
        excluded.append(first)
    quantize_static(str(pre), str(dst),
                    _CalibrationReader(float_proto.graph.input[0].name, calibration),
                    quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, ONNX_ACTIVATION_TYPES[activation_type]),
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded)
    return onnx.load(dst)


def int8_weight_range(proto) -> int:
    """Largest ``|q|`` of the int8 weights (initializers feeding ``DequantizeLinear``) of a
    QDQ ``onnx.ModelProto``; 0 when it has none. At most :data:`ONNX_WEIGHT_MAX` for a model
    that runs exactly on every x86 CPU."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    largest = 0
    for node in proto.graph.node:
        init = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if init is not None:
            q = numpy_helper.to_array(init)
            if q.dtype == np.int8 and q.size:
                largest = max(largest, int(np.abs(q.astype(np.int16)).max()))
    return largest


def strip_qdq(proto):
    """Remove QuantizeLinear -> DequantizeLinear pairs (tf2onnx's rendering of QAT fake-quant
    nodes), leaving a float graph that carries the QAT-trained weights.

    Returns:
        A new ``onnx.ModelProto``.
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    rename: dict[str, str] = {}
    drop = set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            rename[node.output[0]] = q.input[0]
            drop.update({id(node), id(q)})
    kept = [n for n in graph.node if id(n) not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in graph.output:
        if out.name in rename:  # keep the output name: bridge with an Identity
            kept.append(onnx.helper.make_node("Identity", [rename[out.name]], [out.name]))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    return model


def set_onnx_card(proto, card: dict):
    """Store the card as JSON in the ONNX ``metadata_props`` (key ``fmnist_edge_card``)."""
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}
    props[CARD_KEY] = json.dumps(card, sort_keys=True)
    onnx.helper.set_model_props(proto, props)
    return proto
