"""Runtime overhead: batch-1 latency through ``Runtime.logits`` vs the raw interpreter /
session call with a pre-built input (same model, one thread, same images).

    python benchmarks/runtime_overhead.py fmnist_edge/models/default_int8.tflite \\
        fmnist_edge/models/default_int8.onnx --out benchmarks/results/runtime_overhead.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load
from fmnist_edge.runtime.quant import quantize_input


def _p50(fn, inputs, runs: int, warmup: int = 50) -> float:
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(inputs[i % len(inputs)])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def overhead(path: Path, images: np.ndarray, runs: int) -> dict:
    runtime = load(path, num_threads=1)
    singles = [images[i:i + 1] for i in range(len(images))]
    wrapped = _p50(runtime.logits, singles, runs)
    if path.suffix == ".tflite":
        it, inp, out = runtime.interpreter, runtime._in, runtime._out
        runtime._resize(1)
        raw_inputs = [quantize_input(x[..., None].astype(np.float32), runtime.input_dtype,
                                     runtime.input_scale, runtime.input_zero_point)
                      for x in singles]  # pre-built outside the timed call

        def raw(x):
            it.set_tensor(inp["index"], x)
            it.invoke()
            return it.get_tensor(out["index"])
    else:
        session, name = runtime.session, runtime._in.name
        raw_inputs = [x[..., None].astype(np.float32) for x in singles]

        def raw(x):
            return session.run(None, {name: x})[0]
    direct = _p50(raw, raw_inputs, runs)
    return {"model": str(path), "runtime_p50_ms": wrapped, "raw_p50_ms": direct,
            "ratio": wrapped / direct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images = data.load_split("test", args.data_dir)[0][:256]
    rows = [overhead(p, images, args.runs) for p in args.models]
    atomic.write_json(args.out, {"rows": rows, "runs": args.runs, "provenance": provenance()})
    for r in rows:
        print(f"{r['model']}: Runtime {r['runtime_p50_ms']:.4f} ms, raw {r['raw_p50_ms']:.4f} ms,"
              f" ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
