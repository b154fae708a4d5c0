"""How the export's recipe keeps the float model's predictions, one setting at a time: each
setting is ``dataclasses.replace(ExportConfig(), **setting)`` and runs the export's own
stages (data, compress, make/choose), so what is measured is what ``fmnist-edge export``
does. Scored on the *validation* split (never the test set: this chooses the export
defaults): top-1 agreement with the float model and top-1 of the compressed float model, of
the QAT model (fake-quant, in Keras) and of every way each int8 artifact can be made.

    python benchmarks/prune_agreement.py runs/cnn/RUN \\
        --setting prune_epochs=2,lr=1e-4 \\
        --setting prune_epochs=4,lr=3e-4,distill_temperature=4,qat_epochs=2 \\
        --setting sparsity=0,qat_epochs=0      # what int8 post-training quantization costs
        --out benchmarks/results/experiments/prune_agreement_cnn.json

Keys are ``ExportConfig`` fields (``formats`` as ``tflite-int8+onnx-int8``); settings not
given take its defaults. Results are written after every setting, so a long sweep keeps
what it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from fmnist_edge import atomic, runs  # noqa: E402
from fmnist_edge.benchmark import run_script
from fmnist_edge.export import compress, make  # noqa: E402
from fmnist_edge.export import data as export_data  # noqa: E402
from fmnist_edge.export.config import FIELDS, ExportConfig  # noqa: E402
from fmnist_edge.export.source import load_keras  # noqa: E402
from fmnist_edge.formats import FORMATS  # noqa: E402
from fmnist_edge.provenance import provenance  # noqa: E402
from fmnist_edge.train.trainer import predict_logits  # noqa: E402

_TYPES = {f.name: f.type for f in dataclasses.fields(ExportConfig)}


def parse_setting(text: str) -> dict:
    """``"prune_epochs=4,lr=3e-4,formats=tflite-int8"`` -> typed ``ExportConfig`` overrides.

    Raises:
        SystemExit: a key that is not an ``ExportConfig`` field (the message lists them).
    """
    setting: dict = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in FIELDS:
            raise SystemExit(f"unknown setting {key!r}; choose from {', '.join(FIELDS)}")
        kind = str(_TYPES[key])
        setting[key] = (tuple(value.split("+")) if kind.startswith("tuple")
                        else value.lower() in ("1", "true", "yes") if kind == "bool"
                        else int(value) if kind == "int" else float(value) if kind == "float"
                        else value)
    return setting


def run_setting(model_path: Path, reference, config: ExportConfig,
                data_dir: Path | None) -> dict:
    """The export's stages under ``config``, scored on validation."""
    start = time.perf_counter()
    data = export_data.load(model_path.parent, config, data_dir)
    ref_val = predict_logits(reference, data.x_val).argmax(1)

    def score(model) -> dict:
        top1 = predict_logits(model, data.x_val).argmax(1)
        return {"val_agreement": float((top1 == ref_val).mean()),
                "val_top1": float((top1 == data.y_val).mean())}

    compressed = compress.compress_model(load_keras(model_path), reference, config, data)
    result = {"compressed_float": score(compressed.float_model),
              "measured_sparsity": compressed.report.measured_sparsity}
    if compressed.qat is not None:
        result["qat_keras"] = score(compressed.qat)
    quantized = [FORMATS[name] for name in config.formats if FORMATS[name].quantized]
    with tempfile.TemporaryDirectory() as tmp:
        notes = make.make_artifacts(Path(tmp), quantized, reference, compressed, data, config)
    result["int8"] = {name: {"method": n["method"], "by_method": n["validation_by_method"],
                             "errors": n["method_errors"]} for name, n in notes.items()}
    result["time_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--setting", action="append", required=True, type=parse_setting)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    model_path = runs.resolve_model(args.run)
    reference = load_keras(model_path)
    out = {"source_model": str(model_path), "defaults": ExportConfig().to_dict(),
           "results": [], "provenance": provenance()}
    for setting in args.setting:
        config = dataclasses.replace(ExportConfig(), **setting)
        print(f"setting {setting}", flush=True)
        result = run_setting(model_path, reference, config, args.data_dir)
        out["results"].append({"setting": setting, **result})
        print(out["results"][-1], flush=True)
        atomic.write_json(args.out, out)


if __name__ == "__main__":
    run_script(main)
