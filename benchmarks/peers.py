"""Peers: the same model files through fmnist-edge's runtime and through the raw runtimes,
side by side in one process, interleaved, batch 1, one thread.

Peers of a ``.tflite`` file: ``fmnist-edge`` (``fmnist_edge.runtime.load``, what ``predict``
runs: uint8 images in, float32 logits out), ``litert`` (a raw LiteRT interpreter: input
pre-quantized, ``set_tensor``/``invoke``/``get_tensor``, with its default XNNPACK
delegate), ``litert-builtin`` (the same without XNNPACK: LiteRT's builtin kernels) and
``openvino`` (OpenVINO's CPU plugin reading the same file). Peers of an ``.onnx`` file:
``fmnist-edge``, ``onnxruntime`` (a raw session, input pre-built) and ``openvino``. A peer
whose library is missing is skipped and named (OpenVINO is in the ``bench`` extra:
``pip install -e ".[bench]"``). A third-party peer that cannot load one file (OpenVINO's CPU
plugin refuses some int8 TFLite graphs on some CPUs) is listed under ``failed`` with its
error, and the others still run; fmnist-edge's own runtime failing is an error.

    python benchmarks/peers.py fmnist_edge/models/default_int8.tflite \\
        fmnist_edge/models/default_int8.onnx benchmarks/artifacts/cnn/model_fp32.onnx \\
        --peak benchmarks/results/peak_<cpu>.json --out benchmarks/results/peers_<cpu>.json

Every peer of every file runs ``--calls`` calls per round, for ``--rounds`` rounds, the peers
taking turns each round, so that a slow minute of the machine hits all of them alike. p50 and
p99 are over all calls of a peer. ``ratio`` is a peer's p50 over the fastest peer's p50 on
the same file; ``ratio_paired`` takes that ratio within each round and then the median over
rounds, so that the machine's speed changing between rounds (seen up to 2x on a shared VM)
cancels out. With ``--peak`` (benchmarks/peak.py's result) and the model's MACs (from its
``benchmarks/results/zoo_<name>.json``), ``x_bound`` is a peer's p50 over the compute bound
``MACs / peak MAC/s``. ``<cpu>`` names the machine class (``xeon_amx``, ``epyc_avx2``); the
README renders one table per ``peers_*.json``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import interleaved_call_times, machine, run_script
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load
from fmnist_edge.runtime.quant import quantize_pixels

RESULTS = Path(__file__).parent / "results"

#: A peer: ``(path, images uint8[K, 28, 28]) -> (call, inputs)``, ``call(inputs[i])`` runs
#: one image; inputs are built before timing.
Peer = Callable[[Path, np.ndarray], tuple[Callable[[object], object], list]]


def _fmnist_edge(path: Path, images: np.ndarray):
    runtime = load(path, num_threads=1)
    return runtime.logits, [images[i:i + 1] for i in range(len(images))]


def _litert(path: Path, images: np.ndarray, *, builtin: bool = False):
    from fmnist_edge.runtime.litert import interpreter_class, quiet_native_stderr

    interpreter = interpreter_class()
    extra = {}
    if builtin:  # LiteRT's own kernels, without its default XNNPACK delegate
        resolver = getattr(importlib.import_module(interpreter.__module__), "OpResolverType",
                           None)
        if resolver is None:
            raise ImportError(f"{interpreter.__module__} has no OpResolverType")
        extra["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native_stderr():
        it = interpreter(model_path=str(path), num_threads=1, **extra)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    it.resize_tensor_input(inp["index"], [1, 28, 28, 1])
    it.allocate_tensors()
    scale, zero_point = inp["quantization"]
    inputs = [quantize_pixels(images[i:i + 1], np.dtype(inp["dtype"]), scale, zero_point)
              for i in range(len(images))]

    def call(x):
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out["index"])
    return call, inputs


def _onnxruntime(path: Path, images: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    inputs = [images[i:i + 1, ..., None].astype(np.float32) for i in range(len(images))]
    return (lambda x: session.run(None, {name: x})[0]), inputs


def _openvino(path: Path, images: np.ndarray):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    dtype = compiled.inputs[0].get_element_type().to_dtype()
    if np.dtype(dtype) == np.int8:  # full-integer TFLite input: scale 1, zero point -128
        runtime = load(path, num_threads=1)
        prepared = [quantize_pixels(images[i:i + 1], np.dtype(dtype), runtime.input_scale,
                                    runtime.input_zero_point) for i in range(len(images))]
    else:
        prepared = [images[i:i + 1, ..., None].astype(dtype) for i in range(len(images))]
    return (lambda x: request.infer({0: x})), prepared


#: Peers by model suffix, in table order.
PEERS: dict[str, dict[str, Peer]] = {
    ".tflite": {"fmnist-edge": _fmnist_edge, "litert": _litert,
                "litert-builtin": functools.partial(_litert, builtin=True),
                "openvino": _openvino},
    ".onnx": {"fmnist-edge": _fmnist_edge, "onnxruntime": _onnxruntime,
              "openvino": _openvino},
}


def _macs(name: str) -> int | None:
    """MACs per image of the architecture ``name`` (a card's ``name``), from its zoo record."""
    zoo = RESULTS / f"zoo_{name}.json"
    return json.loads(zoo.read_text())["macs_per_image"] if zoo.is_file() else None


def compare(paths: list[Path], images: np.ndarray, *, rounds: int = 20, calls: int = 200,
            warmup: int = 50, peak: dict | None = None,
            only: set[str] | None = None) -> dict:
    """Interleaved batch-1 latency of every peer of every model.

    Args:
        paths: ``.tflite`` / ``.onnx`` model files.
        images: ``uint8[K, 28, 28]`` inputs, cycled through.
        rounds: rounds; each runs every peer ``calls`` times.
        calls: calls per peer per round.
        warmup: untimed calls per peer before the first round.
        peak: ``{"int8": GMAC/s, "fp32": GMAC/s}`` (benchmarks/peak.py) for ``x_bound``.
        only: run only these peers (``None``: all of :data:`PEERS`).

    Returns:
        ``{"rows": [...], "skipped": {peer: reason}, "failed": [{model, peer, error}]}``;
        a row has ``model``, ``peer``,
        ``p50_us``, ``p99_us`` (microseconds), ``round_p50_us`` (each round's p50),
        ``ratio`` (p50 over the fastest peer's),
        ``ratio_paired`` (the median over rounds of that ratio within each round) and, with
        ``peak``, ``bound_us`` and ``x_bound``.

    Raises:
        ValueError: a file that is neither ``.tflite`` nor ``.onnx``.
    """
    runs, skipped, failed = [], {}, []
    for path in paths:
        if path.suffix not in PEERS:
            raise ValueError(f"{path}: peers compares .tflite and .onnx files")
        for peer, make in PEERS[path.suffix].items():
            if only is not None and peer not in only:
                continue
            try:
                call, inputs = make(path, images)
            except ImportError as exc:
                skipped[peer] = f"{exc} (pip install -e \".[bench]\")"
                continue
            except Exception as exc:  # noqa: BLE001 - a peer's refusal is a result
                if peer == "fmnist-edge":
                    raise
                error = " ".join(str(exc).split())
                failed.append({"model": str(path), "peer": peer,
                               "error": f"{type(exc).__name__}: {error}"[:500]})
                continue
            for i in range(warmup):
                call(inputs[i % len(inputs)])
            runs.append((path, peer, call, inputs))
    times = interleaved_call_times([(call, inputs) for *_, call, inputs in runs],
                                   [calls] * rounds)
    rows, per_round = [], {}
    for k, (path, peer, _call, _inputs) in enumerate(runs):
        us = np.asarray([rnd[k] for rnd in times]) * 1e6  # [rounds, calls]
        per_round[str(path), peer] = np.median(us, axis=1)
        rows.append({"model": str(path), "peer": peer, "p50_us": float(np.median(us)),
                     "p99_us": float(np.percentile(us, 99)), "calls": us.size,
                     "round_p50_us": [round(float(v), 2) for v in per_round[str(path), peer]]})
    for path in paths:
        mine = [r for r in rows if r["model"] == str(path)]
        fastest = min(mine, key=lambda r: r["p50_us"])
        card = load(path, num_threads=1).card
        macs = _macs(card.name) if peak else None
        precision = "int8" if card.format.endswith("int8") else "fp32"
        for r in mine:
            r["ratio"] = r["p50_us"] / fastest["p50_us"]
            # paired: each round's p50 over the fastest peer's p50 in the same round, then
            # the median over rounds; a slow minute of the machine cancels out
            r["ratio_paired"] = float(np.median(per_round[str(path), r["peer"]]
                                                / per_round[str(path), fastest["peer"]]))
            if macs:
                r["bound_us"] = macs / (peak[precision] * 1e9) * 1e6
                r["x_bound"] = r["p50_us"] / r["bound_us"]
    return {"rows": rows, "skipped": skipped, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--peak", type=Path, help="benchmarks/peak.py's result JSON")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images = data.load_split("test", args.data_dir)[0][:256]
    peak = json.loads(args.peak.read_text())["peak_gmacs"] if args.peak else None
    before = machine()["load_average_1_5_15_min"]
    result = compare(args.models, images, rounds=args.rounds, calls=args.calls, peak=peak)
    atomic.write_json(args.out, {**result, "rounds": args.rounds, "calls": args.calls,
                                 "peak_gmacs": peak, "load_average_before": before,
                                 "provenance": {**provenance(), "machine": machine()}})
    for r in result["rows"]:
        bound = f", {r['x_bound']:.2f}x bound" if "x_bound" in r else ""
        print(f"{r['model']:50s} {r['peer']:12s} p50 {r['p50_us']:8.1f} us  p99 "
              f"{r['p99_us']:8.1f} us  {r['ratio']:.2f}x fastest "
              f"({r['ratio_paired']:.2f}x paired){bound}")
    for peer, reason in result["skipped"].items():
        print(f"skipped {peer}: {reason}")
    for f in result["failed"]:
        print(f"failed {f['peer']} on {f['model']}: {f['error'][:200]}")


if __name__ == "__main__":
    run_script(main)
