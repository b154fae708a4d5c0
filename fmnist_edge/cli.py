"""The ``fmnist-edge`` command line: parse, build a config, call one library function, print.

Heavy libraries (TensorFlow, onnxruntime) are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fmnist_edge.benchmark import DEFAULT_ROUNDS
from fmnist_edge.contract import LABELS
from fmnist_edge.export.config import ALLOCATIONS, INT8_IO, ExportConfig, field_defaults
from fmnist_edge.export.config import FIELDS as EXPORT_FIELDS
from fmnist_edge.export.config import OPTIMIZERS as EXPORT_OPTIMIZERS
from fmnist_edge.export.granularity import CALIBRATION_METHODS, MAX_ERROR_RATIO
from fmnist_edge.formats import FORMATS, FP16_SET, INT8_SET
from fmnist_edge.train.config import ARCHITECTURES, OPTIMIZERS, SCHEDULES, TRAIN_FIELDS

app = typer.Typer(no_args_is_help=True,
                  help="Fashion-MNIST classifiers from training to the edge.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"fmnist-edge {version('fmnist-edge')}")
        except PackageNotFoundError:
            typer.echo("fmnist-edge (not installed as a package)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Keep TensorFlow's and LiteRT's own log lines.")] = False,
) -> None:
    """Fashion-MNIST classifiers from training to the edge."""
    if verbose:
        from fmnist_edge.quiet import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Folder with the Fashion-MNIST IDX files "
    "(default: $FMNIST_EDGE_DATA, the Keras cache, the fmnist-edge cache, else download).")]


def _h(text: str, field: str) -> str:
    """Help text of a training option with its effective default per architecture (from
    ``fmnist_edge.train.config.RECIPES``, which the typed config resolves: the CLI passes
    ``None``)."""
    from fmnist_edge.train.config import RECIPES

    def value(cfg):
        return getattr(cfg.augment, field) if hasattr(cfg.augment, field) else getattr(cfg, field)

    values = {arch: value(cfg) for arch, cfg in RECIPES.items()}
    if len(set(map(repr, values.values()))) == 1:
        return f"{text} (default: {next(iter(values.values()))})"
    return f"{text} (default: " + ", ".join(f"{a} {v}" for a, v in values.items()) + ")"


def _xh(text: str, field: str) -> str:
    """Help text of an export option with its default, read from ``ExportConfig()`` (the
    CLI passes ``None`` and :meth:`ExportConfig.resolve` applies the default), and the
    architectures whose registry entry sets another."""
    default, own = field_defaults(field)
    others = ", ".join(f"{arch} {value}" for arch, value in own.items())
    return f"{text} (default: {default}" + (f"; {others}" if others else "") + ")"


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def train(
    arch: Annotated[str | None, typer.Argument(
        help=f"Architecture: {', '.join(ARCHITECTURES)}.")] = None,
    epochs: Annotated[int | None, typer.Option(
        help=_h("Maximum epochs.", "epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(
        help=_h("Global batch size.", "batch_size"))] = None,
    lr: Annotated[float | None, typer.Option(
        help=_h("Peak learning rate.", "lr"))] = None,
    optimizer: Annotated[str | None, typer.Option(
        help=_h(", ".join(OPTIMIZERS) + ".", "optimizer"))] = None,
    schedule: Annotated[str | None, typer.Option(
        help=_h(", ".join(SCHEDULES) + ".", "schedule"))] = None,
    warmup_epochs: Annotated[float | None, typer.Option(
        help=_h("Cosine warm-up, epochs.", "warmup_epochs"))] = None,
    cycle_epochs: Annotated[float | None, typer.Option(
        help=_h("Triangular half-cycle, epochs.", "cycle_epochs"))] = None,
    weight_decay: Annotated[float | None, typer.Option(
        help=_h("Decoupled weight decay (adamw, sgd).", "weight_decay"))] = None,
    l2: Annotated[float | None, typer.Option(
        help=_h("L2 penalty on kernels (mlp, cnn, resnets).", "l2"))] = None,
    label_smoothing: Annotated[float | None, typer.Option(
        help=_h("Label smoothing factor, 0-1.", "label_smoothing"))] = None,
    early_stopping: Annotated[int | None, typer.Option(
        help=_h("Patience in epochs on validation accuracy (0: off).", "early_stopping"))] = None,
    val_size: Annotated[int | None, typer.Option(
        help=_h("Validation images held out from the training set.", "val_size"))] = None,
    train_limit: Annotated[int | None, typer.Option(
        help=_h("Train on this many images only (0: all).", "train_limit"))] = None,
    seed: Annotated[int | None, typer.Option(
        help=_h("Seed of the split, initialisation, shuffling and augmentation.", "seed"))] = None,
    shift_px: Annotated[int | None, typer.Option(
        help=_h("Random shift, pixels (0: off).", "shift_px"))] = None,
    flip: Annotated[bool | None, typer.Option(
        "--flip/--no-flip", help=_h("Random horizontal flip.", "flip"))] = None,
    rotation_deg: Annotated[float | None, typer.Option(
        help=_h("Random rotation, degrees (0: off).", "rotation_deg"))] = None,
    zoom: Annotated[float | None, typer.Option(
        help=_h("Random zoom, e.g. 0.1 for 0.9-1.1 (0: off).", "zoom"))] = None,
    shear_deg: Annotated[float | None, typer.Option(
        help=_h("Random shear, degrees (0: off).", "shear_deg"))] = None,
    erasing_prob: Annotated[float | None, typer.Option(
        help=_h("Random-erasing probability (0: off).", "erasing_prob"))] = None,
    appearance: Annotated[float | None, typer.Option(
        help=_h("Probability of randomizing an image's tones and texture, not its shape "
                "(0: off).", "appearance"))] = None,
    input_size: Annotated[int | None, typer.Option(
        help=_h("Resize side for keras.applications backbones.", "input_size"))] = None,
    weights: Annotated[str | None, typer.Option(
        help=_h("Backbone weights: none, imagenet or a weights-file path.", "weights"))] = None,
    dropout: Annotated[float | None, typer.Option(
        help=_h("Dropout before the classifier.", "dropout"))] = None,
    distribute: Annotated[str | None, typer.Option(
        help=_h("none, mirrored (this machine's devices) or multiworker ($TF_CONFIG's "
                "machines).", "distribute"))] = None,
    mixed_precision: Annotated[bool | None, typer.Option(
        "--mixed-precision/--no-mixed-precision",
        help=_h("mixed_float16 on GPU, mixed_bfloat16 on CPU.", "mixed_precision"))] = None,
    class_split: Annotated[bool | None, typer.Option(
        "--class-split/--no-class-split",
        help=_h("Two-stage recipe: classes 0-4, then a new head on 5-9.", "class_split"))] = None,
    photo_augment: Annotated[float | None, typer.Option(
        help=_h("Fraction of each batch taken from training images rendered as phone photos "
                'and converted as predict does (0: off).', 'photo_augment'))] = None,
    photo_pool_size: Annotated[int | None, typer.Option(
        help=_h("Training images rendered into the photo pool (cached on disk).",
                "photo_pool_size"))] = None,
    teacher: Annotated[str | None, typer.Option(
        help="Knowledge distillation from these run folders or .keras files "
             "(comma-separated; their logits are averaged).")] = None,
    distill_temperature: Annotated[float | None, typer.Option(
        help=_h("Distillation temperature T.", "distill_temperature"))] = None,
    distill_alpha: Annotated[float | None, typer.Option(
        help=_h("Weight of the soft-target loss (1 - alpha: the labels).",
                "distill_alpha"))] = None,
    teacher_mixed_precision: Annotated[bool | None, typer.Option(
        "--teacher-mixed-precision/--no-teacher-mixed-precision",
        help=_h("Compute the teachers' logits in mixed precision (the student keeps its own).",
                "teacher_mixed_precision"))] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue an interrupted run folder.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    data_dir: DataDir = None,
) -> None:
    """Train an architecture on Fashion-MNIST; leaves runs/<arch>/<run-id>/."""
    options = {k: v for k, v in locals().items() if k in TRAIN_FIELDS and k != "arch"}
    from fmnist_edge.data import DataError
    from fmnist_edge.runs import RunError

    try:
        from fmnist_edge.train import trainer
        from fmnist_edge.train.config import recipe
    except ImportError as exc:
        _fail(f"training needs TensorFlow ({exc}): pip install \"fmnist-edge[train]\"")
    verbose = 1 if sys.stdout.isatty() else 2
    try:
        if resume is not None:
            if arch is not None:
                _fail("give either ARCH or --resume RUN, not both")
            given = [f"--{k.replace('_', '-')}" for k, v in options.items()
                     if v is not None and k != "mixed_precision"]
            if given:
                _fail(f"--resume {resume} continues the run's recipe (its config.json): drop "
                      f"{', '.join(given)}; only --mixed-precision/--no-mixed-precision may "
                      "change, for the remaining epochs")
            result = trainer.resume(resume, data_dir=data_dir, verbose=verbose,
                                    mixed_precision=options.get("mixed_precision"))
        else:
            if arch is None:
                _fail(f"missing ARCH ({', '.join(ARCHITECTURES)}) or --resume RUN")
            config = recipe(arch, **options)
            result = trainer.train(config, data_dir=data_dir, runs_dir=runs_dir,
                                   verbose=verbose)
    except trainer.TrainingInterrupted as exc:
        _fail(str(exc), code=130)
    except (DataError, RunError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except OSError as exc:  # full disk, read-only runs folder
        _fail(f"cannot write {exc.filename or runs_dir} ({exc.strerror or exc}); the run "
              "folder keeps its last complete files: free space, then --resume it")
    m = result.metrics
    if m.get("worker"):
        typer.echo(f"worker finished ({result.wall_time_s / 60:.1f} min); the chief wrote "
                   "the run folder")
        return
    stages = "".join(f", {k} {v:.2%}" for k, v in m.items() if k.endswith("_stage_accuracy"))
    typer.echo(f"{result.run_dir}: test top-1 {m['top1_accuracy']:.2%}, loss {m['loss']:.4f}, "
               f"{m['parameters']:,} parameters{stages}, {result.wall_time_s / 60:.1f} min")


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Argument(
        help="Model file (.keras, .tflite, .onnx), run or export folder, or a shipped model "
             "(default, default-tflite, default-onnx); default: the shipped model for the "
             "installed runtime.")] = None,
    photos: Annotated[Path | None, typer.Option(
        help="Evaluate on this folder of labelled real photos (manifest.tsv, or sub-folders "
             "<index>_<label>) through predict's conversion, instead of the test set.")] = None,
    montage: Annotated[Path | None, typer.Option(
        help="With --photos: write a PNG montage (photo, what the model saw, prediction).")
    ] = None,
    segment: Annotated[str | None, typer.Option(
        help="With --photos: foreground method grabcut, trim or none (as predict).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check the model file's sha256 against its card.")
    ] = True,
    data_dir: DataDir = None,
) -> None:
    """Top-1 accuracy, per-class precision/recall and confusion matrix on the test set, or
    per class and per kind on a folder of real photos (--photos)."""
    from fmnist_edge.data import DataError
    from fmnist_edge.evaluate import evaluate_model
    from fmnist_edge.photo_eval import PhotoSetError, evaluate_photos
    from fmnist_edge.predict import default_model, resolve_model
    from fmnist_edge.runs import RunError
    from fmnist_edge.runtime import ModelFileError, load

    if photos is None and (montage is not None or segment is not None):
        _fail("--montage and --segment apply to --photos DIR only")
    try:
        model_path = resolve_model(model) if model is not None else default_model()
        if photos is not None:
            report = {"model": str(model_path),
                      **evaluate_photos(photos, load(model_path, verify=verify),
                                        segment=segment,
                                        montage=montage)}
        else:
            report = evaluate_model(model_path, data_dir=data_dir, verify=verify)
    except (DataError, RunError, ModelFileError, PhotoSetError, FileNotFoundError,
            ImportError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if photos is not None:
        _print_photo_report(report)
        return
    typer.echo(f"{report['model']}: test top-1 {report['top1_accuracy']:.2%} "
               f"on {report['num_images']} images, loss {report['loss']:.4f}")
    _print_table("per class", ("class", "precision", "recall", "f1", "support"),
                 [(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                   str(r["support"])) for r in report["per_class"]])
    _print_confusion(report["confusion_matrix"])


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A rich table on standard output; the first column left-aligned, the rest right."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, Console().width)).print(table)


def _print_confusion(matrix: list[list[int]]) -> None:
    _print_table("confusion matrix (rows true, columns predicted)",
                 ("true", *(label[:7] for label in LABELS)),
                 [(name, *map(str, row)) for name, row in zip(LABELS, matrix)])


def _print_photo_report(report: dict) -> None:
    typer.echo(f"{report['model']} on {report['folder']}: top-1 {report['top1_accuracy']:.1%} "
               f"on {report['photos']} photos ({report['fallbacks']} segmentation fallbacks, "
               f"{len(report['failed'])} unreadable)")
    for title, table in (("kind", report["per_kind"]), ("class", report["per_class"])):
        _print_table(f"per {title}", (title, "top-1", "correct", "photos"),
                     [(name, f"{r['top1_accuracy']:.1%}", str(r["correct"]), str(r["photos"]))
                      for name, r in table.items()])
    _print_confusion(report["confusion_matrix"])


@app.command()
def explain(
    paths: Annotated[list[str], typer.Argument(help="Image files, directories or globs.")],
    model: Annotated[str, typer.Option(
        help="Run folder or .keras file (explanations need the Keras model).")] = ...,
    out: Annotated[Path, typer.Option(help="Folder for <stem>.explain.png.")] = Path("explain"),
    top_k: Annotated[int, typer.Option(help="Classes shown per image.")] = 3,
) -> None:
    """Grad-CAM over the last convolutional stage (input-gradient saliency for the MLP) and
    the first and last stages' activations, per image, as PNG figures."""
    from fmnist_edge.contract import softmax
    from fmnist_edge.predict import expand_paths
    from fmnist_edge.preprocess import ImageError, load_image
    from fmnist_edge.runs import RunError, resolve_model

    if not 1 <= top_k <= 10:
        _fail("--top-k must be in 1..10")
    try:
        from fmnist_edge.train import plots
        from fmnist_edge.train.explain import explain as run_explain
        from fmnist_edge.train.keras_shim import load_model
    except ImportError as exc:
        _fail(f"explain needs TensorFlow ({exc}): pip install \"fmnist-edge[train]\"")
    try:
        path = resolve_model(model)
        if path.suffix != ".keras":
            raise RunError(f"--model {model}: explain needs a run folder or .keras file, not "
                           f"{path.suffix or 'a folder'} (gradients come from the Keras model)")
        keras_model = load_model(path)
    except RunError as exc:
        _fail(str(exc))
    except Exception as exc:  # Keras' own errors for unreadable archives
        _fail(f"{model}: not a readable Keras model ({exc})")
    files, failures = expand_paths(paths)
    ok = not failures
    for failure in failures:
        typer.secho(f"{failure.path}: error: {failure.error}", fg=typer.colors.RED, err=True)
    for file in files:
        try:
            pixels = load_image(file).pixels
        except ImageError as exc:
            typer.secho(f"{file}: error: {exc}", fg=typer.colors.RED, err=True)
            ok = False
            continue
        found = run_explain(keras_model, pixels[None])
        probs = softmax(found.logits)[0]
        target = out / f"{file.stem}.explain.png"
        try:
            plots.explanation(pixels, probs, found.heatmap[0], found.method,
                              None if found.first_stage is None else found.first_stage[0],
                              None if found.last_stage is None else found.last_stage[0],
                              target, top_k=top_k)
        except OSError as exc:
            _fail(f"--out {out}: cannot write ({exc.strerror or exc})")
        note = "" if found.method == "gradcam" else " (no convolution: input-gradient saliency)"
        best = int(probs.argmax())
        typer.echo(f"{file}: {LABELS[best]} {probs[best]:.1%} -> {target}{note}")
    if not ok:
        raise typer.Exit(1)


@app.command()
def serve(
    model: Annotated[str, typer.Option(
        help="Model file, export or run folder, or a shipped model.")] = "default",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    top_k: Annotated[int, typer.Option(help="Classes returned per image.")] = 3,
    max_body_mb: Annotated[float | None, typer.Option(
        help="Largest request body, MiB (larger: 413). (default: 16)")] = None,
    max_concurrency: Annotated[int | None, typer.Option(
        help="Requests converted and classified at once; the others wait. (default: 4)")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads.")] = None,
) -> None:
    """Serve the model over HTTP: POST /predict, GET /healthz, GET /model, and a page at /."""
    from fmnist_edge.predict import resolve_model
    from fmnist_edge.runs import RunError
    from fmnist_edge.runtime import ModelFileError
    from fmnist_edge.serve import serve as run_server

    if (not 1 <= port <= 65535 or (max_body_mb is not None and max_body_mb <= 0)
            or (max_concurrency is not None and max_concurrency < 1) or not 1 <= top_k <= 10):
        _fail("--port must be 1-65535, --max-body-mb > 0, --max-concurrency >= 1, --top-k 1-10")
    try:
        run_server(resolve_model(model), host=host, port=port, top_k=top_k,
                   max_body_bytes=None if max_body_mb is None else int(max_body_mb * 2**20),
                   max_concurrency=max_concurrency, num_threads=threads)
    except (ModelFileError, RunError, FileNotFoundError, ImportError, ValueError,
            OSError) as exc:
        _fail(str(exc))


@app.command()
def info(
    model: Annotated[str, typer.Argument(
        help="Model file, export or run folder, or a shipped model (default, default-tflite, "
             "default-onnx).")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The model card: labels, input/output and quantization, source run, accuracy, sha256
    (checked against the file when the card is a sidecar)."""
    from fmnist_edge.model_info import model_info
    from fmnist_edge.predict import resolve_model
    from fmnist_edge.runs import RunError
    from fmnist_edge.runtime import ModelFileError

    try:
        doc = model_info(resolve_model(model))
    except (ModelFileError, RunError, FileNotFoundError, ImportError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    width = max(map(len, doc))
    for key, value in doc.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        typer.echo(f"{key:<{width}}  {shown}")


@app.command()
def predict(
    paths: Annotated[list[str], typer.Argument(
        help="Image files, directories or globs; - reads one image from standard input.")],
    model: Annotated[str | None, typer.Option(
        help="Model file (.onnx, .tflite, .keras), export or run folder, or a shipped model "
             "(default, default-tflite, default-onnx); default: the shipped model for the "
             "installed runtime.")] = None,
    top_k: Annotated[int, typer.Option(help="Classes shown per image.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[Path | None, typer.Option(
        "--csv", help="Also write the results to this CSV file.")] = None,
    save_preprocessed: Annotated[Path | None, typer.Option(
        help="Write the 28x28 images the model saw (and the foreground masks) to this "
             "folder.")] = None,
    segment: Annotated[str | None, typer.Option(
        help="Foreground method: grabcut (OpenCV foreground mask, object on black), trim "
             "(the paper's trim to the corner colour, for studio shots) or none; default "
             "grabcut, or trim without OpenCV.")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Inference threads; default 1: conversion runs on every core.")] = None,
    max_pixels: Annotated[int | None, typer.Option(
        help="Refuse images larger than this many pixels (width x height); default "
             "100,000,000. JPEGs are decoded reduced; a PNG needs about 3 bytes per pixel."
    )] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check the model file's sha256 against its card.")
    ] = True,
) -> None:
    """Classify real photos (Fashion-MNIST conversion pipeline, then the model).

    Exits 1 when any file could not be classified (the others are still reported)."""
    from fmnist_edge.predict import load_model, predict_paths, to_csv, to_json
    from fmnist_edge.runs import RunError
    from fmnist_edge.runtime import ModelFileError

    if as_csv is not None:
        _check_output_file("--csv", as_csv)
    try:
        runtime = load_model(model, threads=threads, verify=verify)
        model_path = runtime.path
        rows = predict_paths(paths, runtime, top_k=top_k, save_preprocessed=save_preprocessed,
                             segment=segment, max_pixels=max_pixels)
    except (ModelFileError, RunError, FileNotFoundError, ImportError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(to_json(rows, model_path), indent=2))
    else:
        for row in rows:
            if row.ok:
                classes = ", ".join(f"{label} {p:.1%}" for _, label, p in row.top_k)
                note = f" (no foreground found, trimmed: {row.fallback})" if row.fallback else ""
                typer.echo(f"{row.path}: {classes}{note}")
            else:
                typer.secho(f"{row.path}: error: {row.error}", fg=typer.colors.RED, err=True)
    if as_csv is not None:
        from fmnist_edge import atomic

        try:
            atomic.write_text(as_csv, to_csv(rows))
        except OSError as exc:
            _fail(f"--csv {as_csv}: cannot write ({exc.strerror or exc}); the results above "
                  "are complete")
    save_errors = {row.save_error for row in rows if getattr(row, "save_error", None)}
    for message in save_errors:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    if save_errors or not all(row.ok for row in rows):
        raise typer.Exit(1)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        _fail(f"{option} takes positive integers separated by commas, got {text!r}")
    return values


@app.command()
def benchmark(
    models: Annotated[list[str], typer.Argument(
        help="Model files (.tflite, .onnx, .keras), export or run folders, or shipped models "
             "(default, default-tflite, default-onnx).")],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1",
    threads: Annotated[str, typer.Option(help="Comma-separated thread counts.")] = "1",
    runs: Annotated[int, typer.Option(help="Timed calls per setting.")] = 200,
    duration: Annotated[float | None, typer.Option(
        help="Time each setting for at least this many seconds.")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls first.")] = 20,
    rounds: Annotated[int | None, typer.Option(
        help="Rounds in which the models take turns, so that a slow minute of the machine "
             f"hits them alike (1: one model after another). (default: {DEFAULT_ROUNDS})"
    )] = None,
    as_json: Annotated[Path | None, typer.Option("--json", help="Write JSON here.")] = None,
    as_csv: Annotated[Path | None, typer.Option("--csv", help="Write CSV here.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Latency (p50/p90/p99 ms), throughput (img/s), size, load time and memory, side by
    side, the models taking turns in rounds; ratios are against the first model (paired:
    the median over rounds of the ratio within each round)."""
    from fmnist_edge import atomic
    from fmnist_edge.benchmark import benchmark as run_benchmark
    from fmnist_edge.benchmark import to_csv, to_table
    from fmnist_edge.data import DataError
    from fmnist_edge.runtime import ModelFileError

    if runs < 1 or warmup < 0 or (duration is not None and duration <= 0):
        _fail("--runs must be >= 1, --warmup >= 0 and --duration > 0")
    if rounds is not None and rounds < 1:
        _fail(f"--rounds must be >= 1, got {rounds}")
    for option, target in (("--json", as_json), ("--csv", as_csv)):
        if target is not None:
            _check_output_file(option, target)
    try:
        from fmnist_edge.predict import resolve_model
        from fmnist_edge.runs import RunError

        try:
            paths = [resolve_model(m) for m in models]
        except (RunError, FileNotFoundError) as exc:
            _fail(str(exc))
        result = run_benchmark(paths, batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
                               threads=_int_list(threads, "--threads"), runs=runs,
                               duration_s=duration, warmup=warmup, rounds=rounds,
                               data_dir=data_dir)
    except (ModelFileError, DataError, ImportError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(to_table(result))
    try:
        if as_json is not None:
            atomic.write_json(as_json, result)
        if as_csv is not None:
            atomic.write_text(as_csv, to_csv(result))
    except OSError as exc:
        _fail(f"cannot write {exc.filename or as_json or as_csv} ({exc.strerror or exc}); "
              "the table above is complete: free space or choose another path")


def _check_output_file(option: str, target: Path) -> None:
    """Fail before any work when ``target`` cannot be an output file."""
    if target.is_dir():
        _fail(f"{option} {target} is a folder; give a file path, e.g. {target / 'bench'}"
              f"{'.json' if option == '--json' else '.csv'}")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        _fail(f"{option} {target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        _fail(f"{option} {target}: {parent} is not writable")


class _StderrHandler(logging.StreamHandler):
    """Log to whatever ``sys.stderr`` is now (it is swapped by typer's CliRunner, so a
    handler bound to the stream of an earlier call would write to a closed file)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


@app.command()
def export(
    source: Annotated[Path | None, typer.Argument(
        help="Run folder or .keras file (default: the newest run under --runs-dir).")] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help=f"The int8 set: {', '.join(INT8_SET)}.")] = False,
    fp16: Annotated[bool, typer.Option(
        "--fp16", help=f"Also {', '.join(FP16_SET)}.")] = False,
    formats: Annotated[str | None, typer.Option(
        help=_xh(f"Comma-separated formats: {', '.join(FORMATS)}.", "formats"))] = None,
    sparsity: Annotated[float | None, typer.Option(
        help=_xh("Pruning sparsity (0: no pruning).", "sparsity"))] = None,
    prune_epochs: Annotated[int | None, typer.Option(
        help=_xh("Fine-tuning epochs while pruning.", "prune_epochs"))] = None,
    keep_ends_dense: Annotated[bool | None, typer.Option(
        "--keep-ends-dense/--prune-ends",
        help=_xh("Keep the first and last Conv2D/Dense dense (the rest reach --sparsity "
                 "overall).", "keep_ends_dense"))] = None,
    sparsity_allocation: Annotated[str | None, typer.Option(
        help=_xh(f"How pruned layers share the sparsity: {', '.join(ALLOCATIONS)} (erk: large "
                 "layers pruned more; Evci et al. 2020).", "sparsity_allocation"))] = None,
    fold_batchnorm: Annotated[bool | None, typer.Option(
        "--fold-batchnorm/--no-fold-batchnorm",
        help=_xh("Fold BatchNorm into the preceding Conv2D/Dense before pruning, so pruning "
                 "ranks the weights the int8 model uses.", "fold_batchnorm"))] = None,
    freeze_batchnorm: Annotated[bool | None, typer.Option(
        "--freeze-batchnorm/--no-freeze-batchnorm",
        help=_xh("Fine-tune with BatchNorm in inference mode (its moving statistics, frozen "
                 "gamma and beta).", "freeze_batchnorm"))] = None,
    qat_epochs: Annotated[int | None, typer.Option(
        help=_xh("Quantization-aware fine-tuning epochs (0: post-training only).",
                 "qat_epochs"))] = None,
    lr: Annotated[float | None, typer.Option(
        help=_xh("Fine-tuning learning rate.", "lr"))] = None,
    optimizer: Annotated[str | None, typer.Option(
        help=_xh(f"Fine-tuning optimizer: {', '.join(EXPORT_OPTIMIZERS)} (sgd: Nesterov "
                 "momentum 0.9).", "optimizer"))] = None,
    distill: Annotated[bool | None, typer.Option(
        "--distill/--no-distill",
        help=_xh("Fine-tune towards the float model's probabilities (knowledge "
                 "distillation).", "distill"))] = None,
    distill_temperature: Annotated[float | None, typer.Option(
        help=_xh("Distillation temperature T (Hinton et al. 2015).",
                 "distill_temperature"))] = None,
    batch_size: Annotated[int | None, typer.Option(
        help=_xh("Fine-tuning batch size.", "batch_size"))] = None,
    calibration_samples: Annotated[int | None, typer.Option(
        help=_xh("Training images in the representative dataset.",
                 "calibration_samples"))] = None,
    int8_io: Annotated[str | None, typer.Option(
        help=_xh(f"TFLite int8 model I/O: {', '.join(INT8_IO)}.", "int8_io"))] = None,
    weight_granularity: Annotated[str | None, typer.Option(
        help=_xh(f"int8 TFLite weight scales: channel (per output channel), auto (per-tensor "
                 f"where that costs at most {MAX_ERROR_RATIO:g}x the rounding error, else "
                 "per-channel), or tensor (per-tensor except depthwise).",
                 "weight_granularity"))] = None,
    calibration_method: Annotated[str | None, typer.Option(
        help=_xh(f"Activation ranges of the post-training int8 TFLite (auto/tensor "
                 f"granularity): {', '.join(CALIBRATION_METHODS)}.", "calibration_method"))
    ] = None,
    onnx_activations: Annotated[str | None, typer.Option(
        help=_xh("Comma-separated QDQ activation types of the int8 ONNX model to make and "
                 "time (int8, uint8); the fastest that keeps the float model's predictions "
                 "is kept.", "onnx_activations"))] = None,
    first_conv: Annotated[str | None, typer.Option(
        help=_xh("Comma-separated ways to make the int8 models' first convolution (int8, "
                 "float: left in float, post-training); each is made and timed, and the "
                 "rule of --agreement-slack and --min-speedup keeps one.", "first_conv"))
    ] = None,
    agreement_slack: Annotated[float | None, typer.Option(
        help=_xh("Validation agreement (fraction) an int8 way may give up against the most "
                 "faithful one to be chosen for speed.", "agreement_slack"))] = None,
    min_speedup: Annotated[float | None, typer.Option(
        help=_xh("Batch-1 speed-up such a way needs to be chosen.", "min_speedup"))] = None,
    max_accuracy_drop: Annotated[float | None, typer.Option(
        help=_xh("Gate: largest int8 top-1 loss vs float, percentage points.",
                 "max_accuracy_drop"))] = None,
    max_class_drop: Annotated[float | None, typer.Option(
        help=_xh("Gate: largest top-1 loss of any one class vs float, percentage points.",
                 "max_class_drop"))] = None,
    float_atol: Annotated[float | None, typer.Option(
        help=_xh("Gate: largest float32 |logit diff| x max(1, |logit|).", "float_atol"))
    ] = None,
    train_limit: Annotated[int | None, typer.Option(
        help=_xh("Fine-tune on this many training images (0: all).", "train_limit"))] = None,
    val_size: Annotated[int | None, typer.Option(
        help=_xh("Validation images of a model without config.json (a run's own split "
                 "wins).", "val_size"))] = None,
    latency_runs: Annotated[int | None, typer.Option(
        help=_xh("Timed batch-1 calls per artifact.", "latency_runs"))] = None,
    seed: Annotated[int | None, typer.Option(
        help=_xh("Seed of sampling and fine-tuning.", "seed"))] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/export).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export.")] = False,
    runs_dir: Annotated[Path, typer.Option()] = Path("runs"),
    data_dir: DataDir = None,
) -> None:
    """Prune + QAT, convert to TFLite/ONNX, and verify parity on the full test set.

    Exits 2 when an artifact fails the parity gate."""
    options = {k: v for k, v in locals().items() if k in EXPORT_FIELDS}
    from fmnist_edge.data import DataError
    from fmnist_edge.formats import parse_formats
    from fmnist_edge.runs import RunError
    from fmnist_edge.runtime import ModelFileError

    try:
        from fmnist_edge.export.pipeline import ExportError, export_run
    except ImportError as exc:
        _fail(f"export needs TensorFlow ({exc}): pip install \"fmnist-edge[train]\"")
    try:
        chosen = (*(parse_formats(formats) if formats else ()), *(INT8_SET if int8 else ()),
                  *(FP16_SET if fp16 else ()))
        options["formats"] = tuple(dict.fromkeys(chosen)) or None
        for name in ("onnx_activations", "first_conv"):  # comma-separated lists
            if options.get(name) is not None:
                options[name] = tuple(t.strip() for t in options[name].split(",") if t.strip())
        from fmnist_edge import runs

        model_path = runs.resolve_model(source if source is not None
                                        else runs.newest_run(runs_dir))
        config = ExportConfig.resolve(runs.run_arch(model_path), **options)
        project_log = logging.getLogger("fmnist_edge")
        project_log.setLevel(logging.INFO)
        if not project_log.handlers:
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            project_log.addHandler(handler)
            project_log.propagate = False  # TensorFlow installs a root handler too
        result = export_run(model_path, config, data_dir=data_dir, runs_dir=runs_dir, out_dir=out,
                            overwrite=overwrite, verbose=1 if sys.stdout.isatty() else 2)
    except (DataError, RunError, ModelFileError, ExportError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:  # full disk, read-only folder: the previous export is kept
        _fail(f"cannot write {exc.filename or out or 'the export'} ({exc.strerror or exc}); "
              "nothing was replaced: free space or choose another --out")
    from rich.console import Console
    from rich.markdown import Markdown

    Console(width=160).print(Markdown((result.out_dir / "parity.md").read_text()))
    if not result.passed:
        _fail(f"parity gate failed; see {result.out_dir / 'parity.md'}", code=2)
    typer.echo(f"export written to {result.out_dir}")


if __name__ == "__main__":
    app()
