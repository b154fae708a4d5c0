"""What one 3x3 convolution at 28x28 costs under LiteRT, int8 against fp32, by its input
channels: where a small model's batch-1 time goes on this CPU.

Each probe is a model ``pixels -> [2x2 conv to Cin channels] -> 3x3 conv Cin -> Cout ->
GAP -> Dense(10)``, converted with the export's converter (``export.convert.to_tflite``,
int8 post-training on a 100-image representative dataset, and fp32); the same model without
the 3x3 convolution is timed too, and the convolution's cost is the difference of the two
medians (batch 1, one thread, XNNPACK, ``--rounds`` rounds of ``--calls`` calls, the four
files of a probe taking turns). Weights are untrained: latency does not depend on their values.

    python benchmarks/conv_cost.py --out benchmarks/results/experiments/conv_cost_<cpu>.json
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import interleaved_call_times, machine, run_script
from fmnist_edge.provenance import provenance

#: (input channels, output channels) of the probed convolutions: the cnn's first (1 -> 32)
#: and second (32 -> 32), narrow stages (8, 16) and the cnn's widest layer at 28x28 scale.
SHAPES = ((1, 32), (8, 32), (16, 16), (32, 32), (64, 64))


def probe(cin: int, cout: int | None):
    """The probe model; ``cout=None`` leaves the 3x3 convolution out (the baseline)."""
    from fmnist_edge.train.keras_shim import keras

    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255.0)(inputs)
    if cin > 1:
        x = layers.Conv2D(cin, 2, padding="same")(x)
    if cout is not None:
        x = layers.ReLU()(layers.Conv2D(cout, 3, padding="same")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def time_files(paths: list[Path], rounds: int, calls: int) -> list[float]:
    """Median microseconds per batch-1 invoke of each file, the files taking turns."""
    from fmnist_edge.runtime.litert import interpreter_class, quiet_native_stderr

    runs = []
    for path in paths:
        with quiet_native_stderr():
            it = interpreter_class()(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        detail = it.get_input_details()[0]
        x = np.zeros(detail["shape"], detail["dtype"])
        for _ in range(20):
            it.set_tensor(detail["index"], x)
            it.invoke()
        runs.append((functools.partial(_invoke, it, detail["index"]), [x]))
    times = interleaved_call_times(runs, [calls] * rounds)
    # each round's mean, then the median over rounds
    return [float(np.median([np.mean(rnd[k]) for rnd in times])) * 1e6
            for k in range(len(runs))]


def _invoke(interpreter, index: int, x: np.ndarray) -> None:
    interpreter.set_tensor(index, x)
    interpreter.invoke()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from fmnist_edge.export import convert

    images = data.load_split("train", args.data_dir)[0][:300]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cin, cout in SHAPES:
            paths = []
            for tag, layer_out in (("conv", cout), ("base", None)):
                model = probe(cin, layer_out)
                model(images[:200, ..., None].astype(np.float32))  # build
                for kind in ("int8", "fp32"):
                    path = Path(tmp) / f"{cin}_{cout}_{tag}_{kind}.tflite"
                    path.write_bytes(convert.to_tflite(
                        model, kind, images[:100] if kind == "int8" else None))
                    paths.append(path)
            conv_int8, conv_fp32, base_int8, base_fp32 = time_files(paths, args.rounds,
                                                                    args.calls)
            row = {"in_channels": cin, "out_channels": cout, "k": cin * 9,
                   "macs": 28 * 28 * 9 * cin * cout,
                   "int8_us": conv_int8 - base_int8, "fp32_us": conv_fp32 - base_fp32}
            rows.append(row)
            print(f"3x3 conv {cin:2d} -> {cout:2d} at 28x28 ({row['macs'] / 1e6:4.1f} MMAC): "
                  f"int8 {row['int8_us']:6.1f} us, fp32 {row['fp32_us']:6.1f} us")
    atomic.write_json(args.out, {"rows": rows, "rounds": args.rounds, "calls": args.calls,
                                 "machine": machine(), "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
