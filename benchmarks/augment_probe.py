"""Augmentation probe: does an augmentation move the real-photo accuracy, in a short fit?

Trains the CNN for a few epochs on all 60,000 training images (AdamW 3e-3 with cosine decay,
weight decay 5e-4, label smoothing 0.1, batch 256: the cnn recipe's optimizer, shortened)
with the cnn recipe's augmentation plus the variant's, then scores the float model on the
test set and on a folder of real photos converted by ``predict``'s conversion (top-1 per
kind, per class, and how often each class is predicted). Short fits rank augmentations, they
do not reach the recipe's accuracy; each variant costs ``epochs`` x about 215 s on the AVX2
EPYC here.

    python benchmarks/augment_probe.py base --epochs 6 --photos ../shared/realphotos-dev \\
        --out benchmarks/results/experiments/augment_probe_cnn.json
    python benchmarks/augment_probe.py appearance --epochs 6 ...  # --appearance 1.0

Variants: ``base`` (the recipe's augmentation), ``appearance`` (plus ``--appearance 1.0``:
``fmnist_edge.train.dataset.APPEARANCE_STEPS``), ``appearance_geometric`` (plus rotation
15 degrees, zoom 0.15, shear 10 degrees). Results of several variants collect in one file.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import run_script
from fmnist_edge.preprocess import load_image
from fmnist_edge.provenance import provenance

VARIANTS = {
    "base": {},
    "appearance": {"appearance": 1.0},
    "appearance_geometric": {"appearance": 1.0, "rotation_deg": 15.0, "zoom": 0.15,
                             "shear_deg": 10.0},
}


def photo_set(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(uint8[N, 28, 28] as predict converts them, int labels[N], kinds[N])`` from the
    folder's ``manifest.tsv``."""
    with open(folder / "manifest.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    pixels = np.stack([load_image(folder / r["local_path"]).pixels for r in rows])
    return (pixels, np.array([int(r["class_index"]) for r in rows]),
            np.array([r["kind"] for r in rows]))


def probe(variant: str, epochs: int, photos: tuple, data_dir=None, seed: int = 0) -> dict:
    """Fit and score one variant (see the module docstring)."""
    from fmnist_edge.train import architectures
    from fmnist_edge.train.config import RECIPES
    from fmnist_edge.train.dataset import augment_batch
    from fmnist_edge.train.keras_shim import keras, tf

    tf.random.set_seed(seed)
    np.random.seed(seed)
    recipe = RECIPES["cnn"]
    augment = dataclasses.replace(recipe.augment, **VARIANTS[variant])
    x, y = data.load_split("train", data_dir)
    x_test, y_test = data.load_split("test", data_dir)

    def prepare(images, labels):
        batch = augment_batch(tf.cast(images, tf.float32)[..., None], augment)
        return batch, tf.one_hot(tf.cast(labels, tf.int32), 10)

    batches = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
               .batch(256).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4))
    model = architectures.build("cnn")
    steps = epochs * math.ceil(len(x) / 256)
    model.compile(keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(3e-3, steps),
                                         weight_decay=5e-4),
                  keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    start = time.perf_counter()
    model.fit(batches, epochs=epochs, verbose=2)
    fit_s = time.perf_counter() - start

    def predict(images):
        return model.predict(images[..., None].astype(np.float32), batch_size=1000,
                             verbose=0).argmax(1)

    pixels, labels, kinds = photos
    predicted = predict(pixels)
    return {
        "variant": variant, "augment": dataclasses.asdict(augment), "epochs": epochs,
        "fit_s": fit_s, "test_top1": float((predict(x_test) == y_test).mean()),
        "photos_top1": float((predicted == labels).mean()),
        "photos_per_kind": {k: float((predicted[kinds == k] == labels[kinds == k]).mean())
                            for k in sorted(set(kinds))},
        "photos_per_class": [float((predicted[labels == c] == c).mean()) for c in range(10)],
        "photos_predicted_per_class": np.bincount(predicted, minlength=10).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = probe(args.variant, args.epochs, photo_set(args.photos), args.data_dir)
    result["provenance"] = provenance()
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {"results": []}
    doc["results"] = [r for r in doc["results"]
                      if (r["variant"], r["epochs"]) != (args.variant, args.epochs)] + [result]
    atomic.write_json(args.out, doc)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}))


if __name__ == "__main__":
    run_script(main)
