"""Two models on the same images: is the difference in top-1 more than chance?

    python benchmarks/paired_compare.py \\
        runs/edgecnn48/<no teacher>/export/model_fp32.onnx \\
        carried/edgecnn48/<with teacher>/export/model_fp32.onnx \\
        --label "no teacher" --label "ResNet-20 teacher" --data-dir ../shared/fashion-mnist \\
        --out benchmarks/results/experiments/distill_edgecnn48_paired.json

On the validation split (the training's split: ``--val-size`` images held out from the
training file with ``--seed``, as ``fmnist-edge train`` does) and on the test set, it counts
the images only one of the two models gets right and gives McNemar's exact test on them
(the two-sided binomial test of those discordant counts against p = 0.5; McNemar 1947,
Psychometrika 12(2); as an exact test: Dietterich 1998, "Approximate statistical tests for
comparing supervised classification learning algorithms", Neural Computation 10(7)). A
single seed per recipe cannot separate differences smaller than what this test calls chance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fmnist_edge import atomic, data
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance
from fmnist_edge.runtime import load


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value of the discordant counts (``scipy.stats.binomtest``
    of ``only_a`` successes in ``only_a + only_b`` trials at p = 0.5); 1.0 when both are 0."""
    if only_a + only_b == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def compare(logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray) -> dict:
    """Paired top-1 of ``float32[N, 10]`` logits of two models on ``uint8[N]`` labels: each
    model's top-1 (0-1), the counts both / only A / only B / neither right, and McNemar's
    exact p-value."""
    right_a = logits_a.argmax(1) == labels
    right_b = logits_b.argmax(1) == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {"images": int(len(labels)), "top1_a": float(right_a.mean()),
            "top1_b": float(right_b.mean()), "both_right": int((right_a & right_b).sum()),
            "only_a_right": only_a, "only_b_right": only_b,
            "neither_right": int((~right_a & ~right_b).sum()),
            "mcnemar_exact_p": mcnemar_exact(only_a, only_b)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_a", type=Path)
    parser.add_argument("model_b", type=Path)
    parser.add_argument("--label", action="append", default=[], help="a name per model")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels_ab = (args.label + [str(args.model_a), str(args.model_b)][len(args.label):])[:2]
    models = [load(args.model_a), load(args.model_b)]
    train_images, train_labels = data.load_split("train", args.data_dir, download=False)
    _, val_idx = data.train_val_indices(train_labels, val_size=args.val_size, seed=args.seed)
    splits = {"val": (train_images[val_idx], train_labels[val_idx]),
              "test": data.load_split("test", args.data_dir, download=False)}
    result = {}
    for name, (images, labels) in splits.items():
        result[name] = compare(*(m.logits(images) for m in models), labels)
        r = result[name]
        print(f"{name}: {labels_ab[0]} {r['top1_a']:.2%}, {labels_ab[1]} {r['top1_b']:.2%}; "
              f"only A right {r['only_a_right']}, only B right {r['only_b_right']}, "
              f"McNemar exact p = {r['mcnemar_exact_p']:.3f}")
    atomic.write_json(args.out, {
        "model_a": {"path": str(args.model_a), "label": labels_ab[0],
                    "sha256": models[0].card.sha256},
        "model_b": {"path": str(args.model_b), "label": labels_ab[1],
                    "sha256": models[1].card.sha256},
        "val_size": args.val_size, "seed": args.seed, **result, "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
