"""Thread settings with and without a busy core: batch-1 and batch-64 latency / throughput of
each model at 1, 2 threads and the library default, first idle, then while another process
spins on one core (one run; the settings are timed one after another, not interleaved).

    python benchmarks/threads_under_load.py fmnist_edge/models/default_int8.tflite \\
        fmnist_edge/models/default_int8.onnx --out benchmarks/results/threads_under_load_<cpu>.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import machine, measure_latency, run_script
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images = data.load_split("test", args.data_dir)[0][:512]
    rows = []
    for busy in (False, True):
        burner = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                  if busy else None)
        try:
            for model in args.models:
                for threads in (1, 2, None):
                    # threads None: no setting at all, the library's own default.
                    runtime = load(model, num_threads=threads)
                    for batch in (1, 64):
                        lat = measure_latency(runtime, images, batch_size=batch, warmup=10,
                                              runs=200 if batch == 1 else 40)
                        rows.append({"busy_core": busy, "model": str(model),
                                     "threads": threads or "library default",
                                     "batch_size": batch, "p50_ms": lat.p50_ms,
                                     "throughput_ips": lat.throughput_ips})
                        print(f"busy={busy!s:5} {model.name:22} threads={threads or 'lib':>3} "
                              f"batch={batch:3} p50 {lat.p50_ms:7.3f} ms "
                              f"{lat.throughput_ips:8.0f} img/s")
        finally:
            if burner is not None:
                burner.kill()
    atomic.write_json(args.out, {"rows": rows, "machine": machine(), "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
