"""Model zoo: measure every trained and exported architecture, then regenerate the README's
zoo table and the accuracy-vs-latency Pareto plot from the committed results.

    python benchmarks/zoo.py runs/mlp/<id> runs/cnn/<id> ...   # measure, then tables + plot
    python benchmarks/zoo.py --tables-only                      # README + plot from results

Measuring a run (it must have been recorded by ``benchmarks/collect.py`` and exported with
``fmnist-edge export --int8``) writes ``benchmarks/results/zoo_<arch>.json``: MACs per image
(counted from the Keras model's Conv2D / DepthwiseConv2D / Dense layers), and the
``fmnist-edge benchmark`` rows of every exported artifact at batch 1 and 256 on one thread.
The table joins those with ``train_<arch>.json`` and ``export_<arch>.json``; it is a pure
function of the committed JSON, so it regenerates byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from fmnist_edge import atomic
from fmnist_edge.benchmark import benchmark, run_script
from fmnist_edge.provenance import provenance
from fmnist_edge.runs import ExportFolder, Run
from fmnist_edge.runtime.card import file_sha256

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collect  # noqa: E402  (sibling script: RESULTS, README markers)

PARETO_PNG = collect.RESULTS / "pareto.png"
#: Small artifacts are committed here, one folder per architecture (issue #5: "up to about
#: 2 MB each"); larger ones are described by their results and the command that made them.
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MAX_COMMITTED_BYTES = 2 * 2**20
ARTIFACT_FORMATS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
#: batch-1 p50 latency budget (ms, one thread, this machine) of the shipped default model.
DEFAULT_LATENCY_BUDGET_MS = 1.0


def count_macs(model) -> int:
    """Multiply-accumulates per image of a Keras model's Conv2D, DepthwiseConv2D and Dense
    layers (convolution: output positions x kernel size; dense: kernel size). Resizing,
    normalisation, pooling, BatchNorm and activations are not counted (the usual convention,
    e.g. the MobileNetV2 paper's "MAdds", arXiv:1801.04381)."""
    from fmnist_edge.train.keras_shim import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            _, height, width, _ = layer.output_shape
            kernel = (layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D)
                      else layer.kernel)
            total += height * width * int(np.prod(kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def measure(run: Path, *, runs: int, data_dir: Path | None, batch_runs: int = 30) -> Path:
    """Benchmark a run's export and count its MACs; writes ``zoo_<arch>.json``.

    ``runs`` timed calls at batch 1 (p50 latency) and ``batch_runs`` at batch 256
    (throughput, img/s), each after 10 untimed calls; a VGG16 batch of 256 takes seconds."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from fmnist_edge.train.keras_shim import load_model

    layout = Run(run)
    config = json.loads(layout.config.read_text())
    arch = config["arch"]
    export = layout.export
    manifest = json.loads(export.manifest.read_text())
    files = {name: export.root / a["file"] for name, a in manifest["artifacts"].items()
             if name in ARTIFACT_FORMATS}
    model = load_model(layout.model)
    bench = [benchmark(list(files.values()), batch_sizes=(batch,), threads=(1,), runs=n,
                       warmup=10, data_dir=data_dir)
             for batch, n in ((1, runs), (256, batch_runs))]
    fmt_of = {str(path): name for name, path in files.items()}
    rows: dict[str, dict] = {}
    for r in bench[0]["rows"] + bench[1]["rows"]:
        row = rows.setdefault(fmt_of[r["model"]], {"size_bytes": r["size_bytes"]})
        row[f"batch_{r['batch_size']}"] = {k: r[k] for k in (
            "p50_ms", "p90_ms", "p99_ms", "throughput_ips", "runs")}
    record = {"arch": arch, "run": run.name, "parameters": int(model.count_params()),
              "macs_per_image": count_macs(model), "benchmark": rows,
              "committed_artifacts": commit_artifacts(arch, export, files),
              "export_command": manifest.get("provenance", {}).get("command"),
              "machine": bench[0]["machine"], "provenance": provenance()}
    return atomic.write_json(collect.RESULTS / f"zoo_{arch}.json", record)


def commit_artifacts(arch: str, export: ExportFolder, files: dict[str, Path],
                     dest_root: Path | None = None) -> dict[str, str | None]:
    """Copy the artifacts of at most :data:`MAX_COMMITTED_BYTES` (with their JSON cards), the
    export's manifest and parity table to ``dest_root/<arch>/`` (default :data:`ARTIFACTS`),
    replacing that folder atomically (:func:`fmnist_edge.atomic.staged_dir`).

    Returns:
        ``{format: committed file name, or None when too large to commit}``.
    """
    kept: dict[str, str | None] = {}
    with atomic.staged_dir((dest_root or ARTIFACTS) / arch) as stage:
        for name, path in files.items():
            kept[name] = None
            if path.stat().st_size <= MAX_COMMITTED_BYTES:
                for f in (path, path.with_name(path.name + ".json")):
                    if f.is_file():
                        shutil.copy2(f, stage / f.name)
                kept[name] = path.name
        for f in (export.manifest, export.parity_md):
            shutil.copy2(f, stage / f.name)
    return kept


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) no other point beats on both (lower
    latency and higher accuracy), in latency order."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def choose_default(rows: list[dict], budget_ms: float = DEFAULT_LATENCY_BUDGET_MS,
                   min_photo_top1: float | None = None) -> str:
    """The model to ship: the most accurate int8 TFLite (test top-1) whose batch-1 p50 fits
    ``budget_ms`` and, when ``min_photo_top1`` is given, whose real-photo development top-1
    (``row["photo_top1"]``, 0-1) is at least that: issue #16 ships a model only if it serves
    real photos too, so a model never measured on them does not qualify. The most accurate
    model within the budget is always on the accuracy-latency Pareto front.

    Raises:
        ValueError: no model qualifies (the message says which condition excluded them).
    """
    fits = [r for r in rows if r["bench"]["tflite-int8"]["batch_1"]["p50_ms"] <= budget_ms]
    if not fits:
        raise ValueError(f"no int8 model has a p50 within {budget_ms} ms")
    if min_photo_top1 is not None:
        fits = [r for r in fits
                if r.get("photo_top1") is not None and r["photo_top1"] >= min_photo_top1]
        if not fits:
            raise ValueError(f"no int8 model within {budget_ms} ms reaches "
                             f"{min_photo_top1:.1%} on the real photos")
    return max(fits, key=lambda r: r["arts"]["tflite-int8"]["top1_accuracy"])["arch"]


def shipped_photo_top1() -> float | None:
    """Real-photo development top-1 (0-1) of the shipped ``default_int8.tflite``, from
    :data:`collect.PHOTOS_ZOO` (matched by SHA-256), or ``None`` when it was not measured."""
    shipped = collect.ROOT / "fmnist_edge" / "models" / "default_int8.tflite"
    return collect.photo_top1_by_sha().get(file_sha256(shipped))


def plot(rows: list[dict], out: Path = PARETO_PNG) -> Path:
    """Accuracy vs batch-1 latency of every int8 TFLite / ONNX model (marker area ~ file
    size), Pareto front of the int8 TFLite models drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for fmt, marker in (("tflite-int8", "o"), ("onnx-int8", "s")):
        xs = [r["bench"][fmt]["batch_1"]["p50_ms"] for r in rows]
        ys = [100 * r["arts"][fmt]["top1_accuracy"] for r in rows]
        sizes = [20 + r["bench"][fmt]["size_bytes"] / 2**14 for r in rows]
        ax.scatter(xs, ys, s=sizes, marker=marker, alpha=0.6, label=f"{fmt} (area ~ size)")
        if fmt == "tflite-int8":
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(r["arch"], (x, y), textcoords="offset points", xytext=(6, 4))
            front = pareto_front(list(zip(xs, ys)))
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "k--", lw=1,
                    label="Pareto front (TFLite int8)")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1, 1 thread (ms, log scale)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Fashion-MNIST int8 models: accuracy vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.08, y=0.12)
    legend = ax.legend(loc="lower center", fontsize=8)
    for handle in legend.legend_handles:  # same-size legend markers, not the first model's
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([40])
    fig.tight_layout()
    atomic.write_with(out, lambda tmp: fig.savefig(tmp, format="png",
                                                   metadata={"Software": None}))
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="*")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--bench-runs", type=int, default=300,
                        help="timed batch-1 calls per artifact")
    parser.add_argument("--batch-runs", type=int, default=30,
                        help="timed batch-256 calls per artifact")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    if not args.tables_only:
        for run in args.runs:
            out = measure(run, runs=args.bench_runs, data_dir=args.data_dir,
                          batch_runs=args.batch_runs)
            print(f"wrote {out}")
    rows = collect.zoo_rows()
    if rows:
        plot(rows)
        floor = shipped_photo_top1()
        try:
            choice = choose_default(rows, min_photo_top1=floor)
        except ValueError as exc:  # nothing beats the shipped model: it stays
            choice = f"keep the shipped model ({exc})"
        print(f"default model by the rule in choose_default() (latency budget "
              f"{DEFAULT_LATENCY_BUDGET_MS} ms, real photos >= the shipped model's "
              f"{'unmeasured' if floor is None else format(floor, '.1%')}): {choice}")
    collect.update_readme()


if __name__ == "__main__":
    run_script(main)
