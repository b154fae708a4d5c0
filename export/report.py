"""parity.md (table) and parity.png (accuracy vs latency, marker area = size)."""

from __future__ import annotations

from pathlib import Path

from fmnist_edge import atomic


def markdown(parity: dict) -> str:
    """The parity table as Markdown."""
    ref = parity["reference"]
    lines = [
        f"# Export parity: {parity['source_model']}",
        "",
        f"Float Keras reference: test top-1 {ref['top1_accuracy']:.2%} on "
        f"{parity['num_test_images']} images. Gate: int8 drop <= "
        f"{parity['gate']['max_accuracy_drop_pp']} pp overall and <= "
        f"{parity['gate'].get('max_class_drop_pp', 'any')} pp on any class, "
        "float32 |logit diff| <= "
        f"{parity['gate']['float_atol']:.0e} x max(1, |logit|). "
        f"Result: **{parity['gate']['status']}**.",
        "",
        "| format | top-1 | delta (pp) | agreement | max abs logit diff | size (bytes) "
        "| gzip (bytes) | p50 ms | p90 ms | gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in parity["artifacts"]:
        lines.append(
            f"| {a['format']} | {a['top1_accuracy']:.2%} | {a['accuracy_delta_pp']:+.2f} "
            f"| {a['top1_agreement']:.2%} | {a['max_abs_logit_diff']:.2e} | {a['size_bytes']:,} "
            f"| {a['gzip_bytes']:,} | {a['latency_p50_ms']:.3f} | {a['latency_p90_ms']:.3f} "
            f"| {'pass' if a['passed'] else 'FAIL: ' + '; '.join(a['reasons'])} |")
    cross = parity.get("cross_runtime_int8_agreement")
    if cross is not None:
        lines += ["", f"int8 TFLite vs int8 ONNX top-1 agreement: {cross:.2%}"]
    sparse = parity.get("sparsity_gzip")
    if sparse:
        lines += ["", f"Pruning, like for like (TFLite fp32, gzip -9): pruned "
                      f"{sparse['pruned_fp32_tflite_gzip_bytes']:,} bytes vs unpruned "
                      f"{sparse['dense_fp32_tflite_gzip_bytes']:,} bytes "
                      f"({sparse['gzip_ratio']:.1%})."]
    pruned = parity.get("pruned_float")
    if pruned:
        int8 = ", ".join(f"{name} {v:.2%}" for name, v in pruned["int8_agreement"].items())
        lines += ["", f"Pruning vs quantization: the pruned float model (before quantization) "
                      f"has top-1 {pruned['top1_accuracy']:.2%} and agrees with the float model "
                      f"on {pruned['top1_agreement']:.2%} of the test images; the int8 "
                      f"artifacts agree with the pruned float model on: {int8}."]
    worst = parity.get("int8_per_class_delta_pp")
    if worst:
        lines += ["", "Per-class top-1 delta of the int8 artifacts (pp):", "",
                  "| class | " + " | ".join(worst) + " |",
                  "|---|" + "---|" * len(worst)]
        classes = next(iter(worst.values())).keys()
        for c in classes:
            lines.append(f"| {c} | " + " | ".join(f"{worst[f][c]:+.1f}" for f in worst) + " |")
    lines += ["", "Latency: batch 1, one thread, this machine; sizes are file bytes."]
    return "\n".join(lines) + "\n"


def plot(parity: dict, path: Path) -> Path:
    """Scatter of top-1 accuracy against p50 batch-1 latency; marker area ~ file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arts = parity["artifacts"]
    biggest = max(a["size_bytes"] for a in arts)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in arts:
        ax.scatter(a["latency_p50_ms"], a["top1_accuracy"] * 100,
                   s=40 + 900 * a["size_bytes"] / biggest, alpha=0.6)
        ax.annotate(f"{a['format']}\n{a['size_bytes'] / 1024:.0f} KiB",
                    (a["latency_p50_ms"], a["top1_accuracy"] * 100), fontsize=8,
                    xytext=(6, 6), textcoords="offset points")
    ax.axhline(parity["reference"]["top1_accuracy"] * 100, ls="--", c="gray",
               label="float Keras")
    ax.set(xlabel="p50 latency, batch 1, 1 thread (ms)", ylabel="test top-1 (%)",
           title="accuracy vs latency (marker area = file size)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


PACKAGES = ("fmnist-edge", "tensorflow", "tf-keras", "tensorflow-model-optimization",
            "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "ai-edge-quantizer", "numpy")


def write_records(folder, result: dict, notes: dict[str, dict], compressed, config,
                  provenance: dict, elapsed_s: float) -> None:
    """Write ``parity.json``, ``parity.md``, ``parity.png``, ``manifest.json`` and
    ``export_config.json`` into ``folder`` (an ``fmnist_edge.runs.ExportFolder``).

    Args:
        result: the parity record (``export.verify.verify``).
        notes: ``{format: notes}`` of the make stage (method, validation, quantized I/O).
        compressed: the compress stage's output (``None`` for float-only exports).
        config: the ``ExportConfig``; ``provenance``: commit, machine, command, time.
        elapsed_s: the export's wall time so far, seconds.
    """
    from dataclasses import asdict

    from fmnist_edge.contract import LABELS
    from fmnist_edge.export.compress import CompressionReport
    from fmnist_edge.formats import FORMATS
    from fmnist_edge.provenance import package_versions
    from fmnist_edge.runtime.card import file_sha256

    atomic.write_json(folder.parity_json, result)
    atomic.write_text(folder.parity_md, markdown(result))
    plot(result, folder.parity_png)
    source = Path(result["source_model"])
    files = {name: folder.artifact(name) for name in notes}
    manifest = {
        "source_model": str(source),
        "source_sha256": file_sha256(source),
        "labels": list(LABELS),
        "input": {"shape": [None, 28, 28, 1], "dtype": "float32",
                  "range": "raw pixels 0-255, dark background (int8 models: see io)"},
        "output": {"shape": [None, 10], "meaning": "logits"},
        "config": config.to_dict(),
        "compression": asdict(compressed.report if compressed else CompressionReport()),
        "artifacts": {
            name: {"file": path.name, "format": name, "sha256": file_sha256(path),
                   "size_bytes": path.stat().st_size, "runtime": FORMATS[name].runtime,
                   "quantized": FORMATS[name].quantized, **notes[name]}
            for name, path in files.items()},
        "sparsity_gzip": compressed.sparsity_gzip if compressed else None,
        "gate": result["gate"],
        "versions": package_versions(PACKAGES),
        "provenance": provenance,
        "export_time_s": elapsed_s,
    }
    atomic.write_json(folder.manifest, manifest)
    atomic.write_json(folder.config, config.to_dict())
