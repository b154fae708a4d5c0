"""Real-photo features end to end: ``evaluate --photos`` on folders made here, ``predict``'s
``--segment`` and ``--save-preprocessed`` masks, and the photo-domain training pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmnist_edge import photos
from fmnist_edge.cli import app
from fmnist_edge.contract import LABELS
from fmnist_edge.predict import predict_paths
from fmnist_edge.runtime import load

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = str(FIXTURES / "mlp_int8.onnx")
runner = CliRunner()


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory, test_split):
    """Phone photos of 30 test images in <index>_<label>/ folders, plus a manifest copy."""
    images, labels = test_split
    root = tmp_path_factory.mktemp("realish")
    rng = np.random.default_rng(8)
    rows = []
    for i in range(30):
        label = int(labels[i])
        folder = root / f"{label}_{LABELS[label].replace('/', '_')}"
        folder.mkdir(exist_ok=True)
        path = folder / f"p{i:02d}.jpg"
        photos.render_phone_photo(images[i], label, rng).save(path, quality=90)
        rows.append((path.relative_to(root).as_posix(), label, "flatlay" if i % 2 else "worn"))
    return root, rows


def test_evaluate_photos_from_folder_names(photo_set, tmp_path):
    root, rows = photo_set
    montage = tmp_path / "montage.png"
    result = runner.invoke(app, ["evaluate", MODEL, "--photos", str(root), "--json",
                                 "--montage", str(montage)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["photos"] == 30 and report["failed"] == []
    assert set(report["per_kind"]) == {"all"}
    # The report agrees with predict run on the same files.
    preds = predict_paths([root / r[0] for r in rows], load(MODEL))
    expected = np.mean([p.top_k[0][0] == r[1] for p, r in zip(preds, rows)])
    assert report["top1_accuracy"] == pytest.approx(expected)
    assert sum(v["photos"] for v in report["per_class"].values()) == 30
    assert np.array(report["confusion_matrix"]).sum() == 30
    assert np.trace(np.array(report["confusion_matrix"])) == round(expected * 30)
    with Image.open(montage) as img:
        assert img.size[0] > 400 and img.size[1] > 100


def test_evaluate_photos_per_kind_from_a_manifest(photo_set, tmp_path):
    root, rows = photo_set
    lines = ["local_path\tclass_index\tclass_name\tkind"]
    lines += [f"{p}\t{label}\t{LABELS[label]}\t{kind}" for p, label, kind in rows]
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")
    try:
        result = runner.invoke(app, ["evaluate", MODEL, "--photos", str(root)])
    finally:
        (root / "manifest.tsv").unlink()
    assert result.exit_code == 0, result.output
    assert "flatlay" in result.output and "worn" in result.output
    assert "confusion matrix" in result.output


def test_evaluate_photos_bad_folders(tmp_path):
    result = runner.invoke(app, ["evaluate", MODEL, "--photos", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "nope" in result.output and "not a folder" in result.output
    (tmp_path / "unlabelled").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "unlabelled" / "x.png")
    result = runner.invoke(app, ["evaluate", MODEL, "--photos", str(tmp_path / "unlabelled")])
    assert result.exit_code == 1 and "<index>_<label>" in result.output
    bad = tmp_path / "badmanifest"
    bad.mkdir()
    (bad / "manifest.tsv").write_text("local_path\tclass_index\nx.png\t12\n")
    result = runner.invoke(app, ["evaluate", MODEL, "--photos", str(bad)])
    assert result.exit_code == 1 and "line 2" in result.output and "0-9" in result.output
    result = runner.invoke(app, ["evaluate", MODEL, "--montage", str(tmp_path / "m.png")])
    assert result.exit_code == 1 and "--photos" in result.output
    assert "Traceback" not in result.output


def test_predict_segment_option_and_saved_masks(photo_set, tmp_path):
    root, rows = photo_set
    first = root / rows[0][0]
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / first.name).write_bytes(first.read_bytes())  # same stem, another folder
    seen = tmp_path / "seen"
    result = runner.invoke(app, ["predict", str(first), str(twin / first.name), "--model",
                                 MODEL, "--save-preprocessed", str(seen), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    names = sorted(p.name for p in seen.iterdir())
    stem = first.stem
    assert f"{stem}.png" in names and f"{stem}-2.png" in names  # nothing overwritten
    if doc["results"][0]["segment"] == "grabcut":
        assert f"{stem}.mask.png" in names
    result = runner.invoke(app, ["predict", str(first), "--model", MODEL, "--segment", "trim",
                                 "--json"])
    assert json.loads(result.stdout)["results"][0]["segment"] == "trim"
    result = runner.invoke(app, ["predict", str(first), "--model", MODEL, "--segment", "magic"])
    assert result.exit_code == 1 and "--segment" in result.output
    assert "Traceback" not in result.output


def test_photo_pool_is_cached_and_converted_like_predict(train_split, tmp_path):
    from fmnist_edge import preprocess
    from fmnist_edge.train import photo_pool

    images, labels = train_split[0][:60], train_split[1][:60]
    pixels, idx = photo_pool.build_pool(images, labels, size=40, seed=3, workers=1,
                                        cache=tmp_path, log=lambda m: None)
    assert pixels.shape == (40, 28, 28) and pixels.dtype == np.uint8
    assert len(set(idx.tolist())) == 40 and idx.max() < 60
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again, idx2 = photo_pool.build_pool(images, labels, size=40, seed=3, cache=tmp_path,
                                        log=lambda m: pytest.fail("rebuilt"))
    np.testing.assert_array_equal(again, pixels)
    np.testing.assert_array_equal(idx2, idx)
    # The first chunk is exactly the renderer followed by predict's conversion.
    rng = np.random.default_rng([3, 0])
    photo = photos.render_phone_photo(images[idx[0]], int(labels[idx[0]]), rng)
    np.testing.assert_array_equal(preprocess.convert(photo, "grabcut").pixels, pixels[0])
    with pytest.raises(ValueError, match="1..60"):
        photo_pool.build_pool(images, labels, size=61, cache=tmp_path)


@pytest.mark.tf
def test_photo_fraction_replaces_that_share_of_each_batch(train_split):
    from fmnist_edge.train.dataset import make_dataset

    images = np.zeros((400, 28, 28), np.uint8)
    labels = train_split[1][:400]
    pool = (np.full((200, 28, 28), 255, np.uint8), np.arange(0, 400, 2))
    ds = make_dataset(images, labels, batch_size=400, training=True, augment=None,
                      photo_pool=pool, photo_fraction=0.3)
    x, y = next(iter(ds))
    share = float((np.asarray(x).reshape(400, -1).max(axis=1) == 255).mean())
    assert 0.2 < share < 0.4
    assert np.asarray(y).shape == (400, 10)
