"""Peak int8 and fp32 multiply-accumulates per second on one core: the compute bound.

A model's compute bound is ``MACs per image / peak MAC/s``: no runtime can run it faster on
this core. The peak is measured, not taken from a data sheet, as the best of well-tuned GEMM
kernels on one thread: onnxruntime's MLAS (``MatMulInteger``, uint8 x int8 -> int32, the
kernel its int8 convolutions use; ``MatMul`` float32) and, for fp32, numpy's BLAS. The GEMM
is square enough (``M x K x N`` = 256 x 1024 x 1024, 268 MMAC a call) that packing and call
overhead are below 1 %.

    python benchmarks/peak.py --out benchmarks/results/peak_<cpu>.json

``<cpu>`` names the machine class (``xeon_amx``, ``epyc_avx2``): results of each CPU are kept
side by side.

Each kernel runs ``--rounds`` interleaved rounds of ``--calls`` calls; the result is the
median of the per-round rates (GMAC/s) and the best round. One thread everywhere
(``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` are set before numpy loads).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from fmnist_edge import atomic  # noqa: E402
from fmnist_edge.benchmark import run_script  # noqa: E402
from fmnist_edge.provenance import provenance  # noqa: E402

#: GEMM shape ``(M, K, N)``: M rows of activations (a batch), K x N weights.
SHAPE = (256, 1024, 1024)


def _ort_gemm(int8: bool, shape: tuple[int, int, int]) -> Callable[[], object]:
    """One onnxruntime session (1 thread) running one GEMM; returns a call with its input
    pre-built."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)
    if int8:
        a_type, a = TensorProto.UINT8, rng.integers(0, 256, (m, k), dtype=np.uint8)
        b = rng.integers(-127, 128, (k, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        out_type = TensorProto.INT32
    else:
        a_type, a = TensorProto.FLOAT, rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        out_type = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "gemm", [helper.make_tensor_value_info("a", a_type, [m, k])],
        [helper.make_tensor_value_info("y", out_type, [m, n])],
        initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feed = {"a": a}
    return lambda: session.run(None, feed)


def _numpy_gemm(shape: tuple[int, int, int]) -> Callable[[], object]:
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    return lambda: np.matmul(a, b, out=out)


KERNELS: dict[str, tuple[str, Callable[[tuple[int, int, int]], Callable[[], object]]]] = {
    "onnxruntime MatMulInteger u8s8": ("int8", lambda s: _ort_gemm(True, s)),
    "onnxruntime MatMul fp32": ("fp32", lambda s: _ort_gemm(False, s)),
    "numpy matmul fp32 (BLAS)": ("fp32", _numpy_gemm),
}


def measure(rounds: int = 7, calls: int = 10, shape: tuple[int, int, int] = SHAPE) -> dict:
    """Per-kernel GEMM rate on one thread, interleaved rounds.

    Args:
        rounds: interleaved rounds (every kernel once per round).
        calls: GEMM calls per kernel per round.
        shape: ``(M, K, N)``.

    Returns:
        ``{"kernels": {name: {"precision", "gmacs_median", "gmacs_best"}},
        "peak_gmacs": {"int8": float, "fp32": float}}`` in GMAC/s (1e9 multiply-accumulates
        per second), the peak being the best kernel's median.
    """
    macs = shape[0] * shape[1] * shape[2]
    runs = {name: build(shape) for name, (_, build) in KERNELS.items()}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: page in weights, pack B
        for _ in range(2):
            run()
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            rates[name].append(macs * calls / (time.perf_counter() - start) / 1e9)
    kernels = {name: {"precision": KERNELS[name][0],
                      "gmacs_median": float(np.median(r)), "gmacs_best": float(max(r))}
               for name, r in rates.items()}
    peak = {p: max(k["gmacs_median"] for k in kernels.values() if k["precision"] == p)
            for p in ("int8", "fp32")}
    return {"shape_mkn": list(shape), "rounds": rounds, "calls": calls,
            "kernels": kernels, "peak_gmacs": peak}


def compute_bound_us(macs: int, peak_gmacs: float) -> float:
    """Time in microseconds that ``macs`` multiply-accumulates take at ``peak_gmacs``."""
    return macs / (peak_gmacs * 1e9) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = measure(args.rounds, args.calls)
    atomic.write_json(args.out, {**result, "provenance": provenance()})
    for name, k in result["kernels"].items():
        print(f"{name:34s} {k['precision']}: {k['gmacs_median']:7.1f} GMAC/s median, "
              f"{k['gmacs_best']:7.1f} best")
    print(f"peak per core: int8 {result['peak_gmacs']['int8']:.1f} GMAC/s, "
          f"fp32 {result['peak_gmacs']['fp32']:.1f} GMAC/s")


if __name__ == "__main__":
    run_script(main)
