"""Ship an exported run as the package's default model (``fmnist_edge/models/``).

    python benchmarks/ship_default.py runs/cnn/<run-id>

Copies the int8 TFLite and int8 ONNX (with their JSON cards) to
``fmnist_edge/models/default_int8.{tflite,onnx}`` and writes ``MODEL_CARD.md`` from the run's
metrics and the export's parity record. Refuses an export that failed its gate.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from fmnist_edge import atomic, runs
from fmnist_edge.benchmark import run_script

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fmnist_edge" / "models"


def card_markdown(run: Path, metrics: dict, parity: dict, manifest: dict) -> str:
    arts = {a["format"]: a for a in parity["artifacts"]}
    lines = [
        f"# Default model: {metrics.get('arch', run.parent.name)} (int8)",
        "",
        "Shipped inside the package so that `fmnist-edge predict IMAGE` works right after "
        "install. Produced by `fmnist-edge train` and `fmnist-edge export --int8`; the "
        "figures below come from those commands' own records (benchmarks/results/).",
        "",
        f"- Source run: `{run.parent.name}/{run.name}`, {metrics['parameters']:,} parameters, "
        f"float test top-1 {metrics['top1_accuracy']:.2%}.",
        f"- Compression: {manifest['config']['sparsity']:.0%} magnitude pruning, "
        f"distillation from the float model: {manifest['config'].get('distill', False)}; "
        "int8 by quantization-aware training (`qat`, "
        f"{manifest['compression']['qat_scheme']}) or post-training quantization (`ptq`), "
        "whichever agreed best with the float model on the validation split (column "
        "`method`).",
        "- Input: `float32[N, 28, 28, 1]` raw pixels 0-255 (ONNX), or int8 with scale 1 and "
        "zero point -128 (TFLite); Fashion-MNIST convention: dark background, bright object. "
        "Photos are converted by `fmnist_edge.preprocess` first.",
        "- Output: `float32[N, 10]` logits in the order T-shirt/top, Trouser, Pullover, "
        "Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.",
        "",
        "| file | method | test top-1 | agreement with float | size (bytes) "
        "| p50 ms (batch 1, 1 thread) |",
        "|---|---|---|---|---|---|",
    ]
    for fmt, name in (("tflite-int8", "default_int8.tflite"), ("onnx-int8", "default_int8.onnx")):
        a = arts[fmt]
        method = manifest["artifacts"][fmt].get("method", "qat")
        lines.append(f"| {name} | {method} | {a['top1_accuracy']:.2%} | {a['top1_agreement']:.2%} "
                     f"| {a['size_bytes']:,} | {a['latency_p50_ms']:.3f} |")
    lines += [
        "",
        "Limitations: trained on Fashion-MNIST only (ten clothing classes, centred product "
        "shots on plain backgrounds). Real photos with clutter, several objects, or "
        "non-clothing subjects are outside what it was trained for; its weakest class is "
        "Shirt (confused with T-shirt/top, Pullover and Coat).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    run = runs.Run(args.run)
    export = run.export
    parity = json.loads(export.parity_json.read_text())
    if parity["gate"]["status"] != "passed":
        raise SystemExit(f"{export} failed its parity gate; not shipping it")
    manifest = json.loads(export.manifest.read_text())
    metrics = json.loads(run.metrics.read_text())
    MODELS.mkdir(exist_ok=True)
    for suffix in ("tflite", "onnx"):
        src = export.artifact(f"{suffix}-int8")
        dst = MODELS / f"default_int8.{suffix}"
        atomic.write_with(dst, lambda tmp, s=src: shutil.copyfile(s, tmp))
        atomic.write_with(dst.with_name(dst.name + ".json"),
                          lambda tmp, s=src: shutil.copyfile(s.with_name(s.name + ".json"), tmp))
    atomic.write_text(MODELS / "MODEL_CARD.md", card_markdown(args.run, metrics, parity,
                                                              manifest))
    print(f"shipped {export} -> {MODELS}")


if __name__ == "__main__":
    run_script(main)
