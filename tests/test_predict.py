"""``fmnist-edge predict`` and ``benchmark`` through typer's CliRunner, without TensorFlow."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmnist_edge import photos
from fmnist_edge.cli import app
from fmnist_edge.contract import LABELS

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = str(FIXTURES / "mlp_int8.onnx")
runner = CliRunner()


@pytest.fixture
def photo_dir(tmp_path, test_split):
    images, labels = test_split
    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        (folder / f"item{i}.jpg").write_bytes(photos.render_photo(images[i], rng))
    Image.fromarray(images[4]).save(folder / "sub" / "raw28.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


def test_directory_with_a_broken_file(photo_dir):
    result = runner.invoke(app, ["predict", str(photo_dir), "--model", MODEL])
    assert result.exit_code == 1  # some failed
    assert "broken.png: error:" in result.output and "cannot decode" in result.output
    good = [line for line in result.output.splitlines() if line.endswith("%")]
    assert len(good) == 5  # the other files still ran (4 photos + one 28x28 in sub/)
    assert any(label in good[0] for label in LABELS)


def test_json_schema(photo_dir, tmp_path):
    out_dir = tmp_path / "seen"
    result = runner.invoke(app, ["predict", str(photo_dir / "*.jpg"), str(photo_dir / "nope.jpg"),
                                 "--model", MODEL, "--json", "--top-k", "3",
                                 "--save-preprocessed", str(out_dir)])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["model"] == MODEL
    ok = [r for r in doc["results"] if r["ok"]]
    bad = [r for r in doc["results"] if not r["ok"]]
    assert len(ok) == 4 and len(bad) == 1
    assert bad[0]["path"].endswith("nope.jpg") and bad[0]["error"]
    for row in ok:
        assert set(row) == {"path", "ok", "passthrough", "segment", "fallback", "top_k"}
        assert row["segment"] in ("grabcut", "trim", "none") and row["fallback"] is None
        assert len(row["top_k"]) == 3
        probs = [k["probability"] for k in row["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert {k["label"] for k in row["top_k"]} <= set(LABELS)
        assert row["passthrough"] is False
    saved = sorted(p.name for p in out_dir.iterdir() if not p.name.endswith(".mask.png"))
    assert saved == [f"item{i}.png" for i in range(4)]
    assert np.asarray(Image.open(out_dir / "item0.png")).shape == (28, 28)


def test_passthrough_image_and_all_ok_exit_zero(photo_dir):
    result = runner.invoke(app, ["predict", str(photo_dir / "sub" / "raw28.png"),
                                 "--model", MODEL, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["results"][0]["passthrough"] is True


def test_bad_model_is_a_clear_error(photo_dir, tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(Path(MODEL).read_bytes()[:1000])
    result = runner.invoke(app, ["predict", str(photo_dir), "--model", str(bad)])
    assert result.exit_code == 1 and "cut.onnx" in result.output
    assert "Traceback" not in result.output


def test_default_model_ships_with_the_package(photo_dir):
    from fmnist_edge.predict import default_model
    from fmnist_edge.runtime import load

    path = default_model()
    card = load(path).card
    assert card.labels == LABELS and card.test_accuracy > 0.9 and card.sha256
    result = runner.invoke(app, ["predict", str(photo_dir / "item0.jpg")])
    assert result.exit_code == 0, result.output
    assert any(label in result.output for label in LABELS)


def test_benchmark_table_json_csv(tmp_path, data_dir):
    fp32, int8 = str(FIXTURES / "mlp_fp32.tflite"), str(FIXTURES / "mlp_int8.tflite")
    result = runner.invoke(app, ["benchmark", fp32, int8, "--batch-sizes", "1,16",
                                 "--threads", "1", "--runs", "20", "--json",
                                 str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv"),
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert len(doc["rows"]) == 4
    assert doc["machine"]["cores"] >= 1 and "onnxruntime" in doc["machine"]["versions"]
    assert doc["inputs"] == "fashion-mnist test images"
    row = doc["rows"][2]
    assert row["model"] == int8 and row["batch_size"] == 1
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    # images over elapsed time: between the rates at the best and the worst call
    assert 1000 / row["p99_ms"] * 0.9 <= row["throughput_ips"] <= 1000 / row["p50_ms"] * 3
    assert row["first_load_time_ms"] >= 0 and row["load_time_ms"] >= 0
    assert row["rss_delta_mb"] >= 0 or abs(row["rss_delta_mb"]) < 50
    assert len(doc["machine"]["load_average_1_5_15_min"]) == 3
    assert row["size_ratio_to_first"] < 0.35 and row["peak_rss_mb"] > 0
    assert doc["rows"][0]["p50_ratio_to_first"] == 1.0
    assert doc["rows"][0]["p50_ratio_paired"] == 1.0
    # the models took turns in rounds: every model's calls are split across them
    assert doc["settings"]["rounds"] == 5 and row["runs"] == 20
    assert 0 < row["p50_ratio_paired"] < 10
    assert (tmp_path / "b.csv").read_text().splitlines()[0].startswith("model,batch_size")
    assert "x paired" in result.output


def test_benchmark_models_take_turns_in_rounds(monkeypatch, data_dir):
    from fmnist_edge import benchmark as bench

    calls = []

    class Recorder:
        def __init__(self, path):
            self.name = Path(path).name

        def logits(self, images):
            calls.append(self.name)
            return np.zeros((len(images), 10), np.float32)

    monkeypatch.setattr(bench, "load", lambda path, num_threads: Recorder(path))
    files = [FIXTURES / "mlp_fp32.tflite", FIXTURES / "mlp_int8.tflite"]
    result = bench.benchmark(files, runs=6, warmup=0, rounds=3, data_dir=data_dir)
    timed = calls[2:]  # after one first call per model at load
    assert timed == (["mlp_fp32.tflite"] * 2 + ["mlp_int8.tflite"] * 2) * 3
    assert [r["runs"] for r in result["rows"]] == [6, 6]
    one_block = bench.benchmark(files, runs=6, warmup=0, rounds=1, data_dir=data_dir)
    assert one_block["settings"]["rounds"] == 1
    assert calls[-12:] == ["mlp_fp32.tflite"] * 6 + ["mlp_int8.tflite"] * 6
    # runs split as evenly as possible, exactly runs calls; no more rounds than calls
    uneven = bench.benchmark(files, runs=5, warmup=0, rounds=3, data_dir=data_dir)
    assert calls[-10:] == (["mlp_fp32.tflite"] * 2 + ["mlp_int8.tflite"] * 2) * 2 + [
        "mlp_fp32.tflite", "mlp_int8.tflite"]
    assert [r["runs"] for r in uneven["rows"]] == [5, 5]
    few = bench.benchmark(files, runs=2, warmup=0, rounds=5, data_dir=data_dir)
    assert few["settings"]["rounds"] == 2 and [r["runs"] for r in few["rows"]] == [2, 2]


def test_interleaved_call_times_take_turns_and_cycle_each_callables_inputs():
    from fmnist_edge.benchmark import interleaved_call_times

    seen = []
    calls = [(lambda x: seen.append(("a", x)), ["a0", "a1"]),
             (lambda x: seen.append(("b", x)), ["b0"])]
    times = interleaved_call_times(calls, [3, 1])
    # round 0: a three times (inputs cycling), then b; round 1 starts each from its first input
    assert [who for who, _ in seen] == ["a"] * 3 + ["b"] * 3 + ["a", "b"]
    assert [x for _, x in seen] == ["a0", "a1", "a0", "b0", "b0", "b0", "a0", "b0"]
    assert [[len(per) for per in rnd] for rnd in times] == [[3, 3], [1, 1]]
    assert all(t >= 0 for rnd in times for per in rnd for t in per)


def test_benchmark_bad_options(tmp_path):
    result = runner.invoke(app, ["benchmark", str(FIXTURES / "mlp_int8.tflite"),
                                 "--batch-sizes", "0"])
    assert result.exit_code == 1 and "--batch-sizes" in result.output
    result = runner.invoke(app, ["benchmark", str(FIXTURES / "mlp_int8.tflite"),
                                 "--rounds", "0"])
    assert result.exit_code == 1 and "--rounds must be >= 1" in result.output
    result = runner.invoke(app, ["benchmark", str(tmp_path / "none.tflite")])
    assert result.exit_code == 1 and "none.tflite" in result.output


def test_photo_renderer_exif(test_split):
    rng = np.random.default_rng(0)
    blob = photos.render_photo(test_split[0][0], rng, exif_rotation=True)
    img = Image.open(io.BytesIO(blob))
    assert img.getexif().get(0x0112) in (3, 6, 8)


def test_photo_round_trip_keeps_accuracy(test_split, tmp_path):
    """Real test images rendered as product photos (white background, upscaled, off-centre,
    RGB JPEG, a third with an EXIF rotation) keep >= 95 % of the default model's accuracy.
    The full-test-set figure is benchmarks/results/photo_roundtrip.json."""
    from fmnist_edge.predict import default_model, predict_paths
    from fmnist_edge.runtime import load

    images, labels = test_split[0][:300], test_split[1][:300]
    runtime = load(default_model())
    original = (runtime.logits(images).argmax(1) == labels).mean()
    rng = np.random.default_rng(21)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"{i:03d}.jpg"
        path.write_bytes(photos.render_photo(image, rng, exif_rotation=(i % 3 == 0)))
        paths.append(path)
    rows = predict_paths(paths, runtime)
    assert all(r.ok for r in rows)
    through_photos = (np.array([r.top_k[0][0] for r in rows]) == labels).mean()
    assert original > 0.9
    assert through_photos >= 0.95 * original


def test_evaluate_any_format_without_tensorflow(test_split, data_dir):
    from fmnist_edge.runtime import load

    model = str(FIXTURES / "mlp_int8.tflite")
    result = runner.invoke(app, ["evaluate", model, "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    images, labels = test_split
    expected = (load(model).logits(images).argmax(1) == labels).mean()
    assert report["top1_accuracy"] == pytest.approx(expected)
    assert np.array(report["confusion_matrix"]).sum() == 10000
    assert {"precision", "recall"} <= set(report["per_class"][0])


def test_default_model_is_the_runtime_measured_faster_here_and_the_choice_is_cached(
        monkeypatch):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    from fmnist_edge import predict
    from fmnist_edge.runtime import choice

    calls = []
    real = choice.measure(  # both shipped files really run: positive times for each
        [predict.MODELS_DIR / "default_int8.tflite", predict.MODELS_DIR / "default_int8.onnx"],
        rounds=1, calls=1)
    assert set(real) == {"default_int8.tflite", "default_int8.onnx"}
    assert all(ms > 0 for ms in real.values())

    def measured(paths, **_):
        calls.append([p.name for p in paths])
        return {"default_int8.tflite": 2.0, "default_int8.onnx": 1.0}

    monkeypatch.setattr(choice, "measure", measured)
    assert predict.default_model().name == "default_int8.onnx"
    assert predict.default_model().name == "default_int8.onnx"
    assert len(calls) == 1  # the second call read the cache
    cached = json.loads(choice.cache_path().read_text())
    assert cached["choice"] == "default_int8.onnx" and cached["key"]["models"]
    # measured with the threads predict runs the model with, and keyed by them
    assert cached["key"]["threads"] == cached["threads"] == predict.PREDICT_THREADS
    # predict --threads N: the choice is measured (and cached) for N threads
    import fmnist_edge.runtime

    monkeypatch.setattr(fmnist_edge.runtime, "load", lambda path, **_: path)
    assert predict.load_model(None, threads=2).name == "default_int8.onnx"
    assert len(calls) == 2
    assert json.loads(choice.cache_path().read_text())["threads"] == 2
    predict.default_model()
    assert len(calls) == 3  # back to one thread: measured again, one cache entry
    # another CPU (or runtime version, or model file) measures again
    monkeypatch.setattr(choice, "machine", lambda: {"cpu": "another CPU", "cores": 1})
    predict.default_model()
    assert len(calls) == 4
    # the same CPU name with other int8 instructions (an AVX2 EPYC, a VNNI EPYC) too
    monkeypatch.setattr(choice, "machine",
                        lambda: {"cpu": "another CPU", "cores": 1, "int8_isa": "avx512_vnni"})
    predict.default_model()
    assert len(calls) == 5
    predict.default_model()
    assert len(calls) == 5
    # a damaged cache is measured again, never an error
    choice.cache_path().write_text("{not json")
    assert predict.default_model().name == "default_int8.onnx" and len(calls) == 6


def test_default_model_with_one_runtime_needs_no_measurement(monkeypatch):
    from fmnist_edge import predict
    from fmnist_edge.runtime import choice

    monkeypatch.setattr(choice, "measure", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(predict, "_litert_installed", lambda: False)
    monkeypatch.setattr(predict, "installed", lambda module: module == "onnxruntime")
    assert predict.default_model().name == "default_int8.onnx"
    assert not choice.cache_path().exists()


def test_an_export_folder_with_both_int8_files_resolves_to_the_faster_here(tmp_path,
                                                                             monkeypatch):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    import shutil

    from fmnist_edge.predict import resolve_model
    from fmnist_edge.runtime import choice

    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(FIXTURES / "mlp_int8.tflite", export / "model_int8.tflite")
    shutil.copy(FIXTURES / "mlp_int8.onnx", export / "model_int8.onnx")
    (export / "manifest.json").write_text(json.dumps({"artifacts": {
        "tflite-int8": {"file": "model_int8.tflite"},
        "onnx-int8": {"file": "model_int8.onnx"}}}))
    timings = {"model_int8.tflite": 1.0, "model_int8.onnx": 3.0}
    monkeypatch.setattr(choice, "measure", lambda paths, **_: dict(timings))
    assert resolve_model(export) == export / "model_int8.tflite"
    (export / "model_int8.tflite").unlink()  # one left: no measurement needed
    monkeypatch.setattr(choice, "measure", lambda *a, **k: pytest.fail("measured"))
    assert resolve_model(export) == export / "model_int8.onnx"


def test_tied_logits_rank_like_argmax(tmp_path):
    """An int8 model's dequantized logits can tie exactly; predict (and serve) then rank the
    tied classes by index, as argmax (evaluate, the parity gate) does, not by an unstable
    sort's whim."""
    from fmnist_edge.predict import predict_paths

    class Tied:
        path, card = Path("tied.onnx"), None

        def logits(self, images):
            out = np.zeros((len(images), 10), np.float32)
            out[:, [2, 3, 5, 7, 8]] = 4.0  # five-way tie for the top
            return out

    from fmnist_edge.contract import top_classes

    tied = Tied().logits(np.zeros((1, 28, 28), np.uint8))[0]
    assert list(top_classes(tied, 3)) == [2, 3, 5] and tied.argmax() == 2
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    for _ in range(20):
        (row,) = predict_paths([tmp_path / "a.png"], Tied(), top_k=10)
        assert [i for i, _, _ in row.top_k] == [2, 3, 5, 7, 8, 0, 1, 4, 6, 9]


def test_predict_loads_its_model_with_one_inference_thread_unless_told():
    """Conversion runs on every core beside the model, so predict's runtime gets
    PREDICT_THREADS inference threads; --threads overrides it."""
    pytest.importorskip("onnxruntime")
    from fmnist_edge.predict import PREDICT_THREADS, load_model

    model = FIXTURES / "mlp_int8.onnx"
    default = load_model(model).session.get_session_options()
    assert default.intra_op_num_threads == PREDICT_THREADS == 1
    assert load_model(model, threads=2).session.get_session_options().intra_op_num_threads == 2


def test_conversion_workers_follow_the_cores_the_process_may_use():
    import os

    from fmnist_edge.runtime import usable_cores

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity API on this platform")
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, cores)
    assert usable_cores() == len(cores)


def test_folder_walk_finds_image_files_in_path_order_like_rglob(tmp_path):
    """predict's folder walk (os.scandir) lists what sorted(rglob) with an is_file() and a
    suffix test lists: nested folders, any-case suffixes, no other files, no FIFOs, no
    descent into a symlinked folder (a cycle here)."""
    import os

    from fmnist_edge.predict import IMAGE_SUFFIXES, image_files

    for name in ("b.png", "a-b.PNG", "a/b.jpg", "a/z/c.webp", "notes.txt", "a/.x.JpEg",
                 "a b/d.bmp"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "a" / "pipe.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    expected = sorted(p for p in tmp_path.rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    found = image_files(tmp_path)
    assert found == expected
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/.x.JpEg", "a/b.jpg", "a/z/c.webp", "a b/d.bmp", "a-b.PNG", "b.png"]


def test_png_decoder_is_opencv_for_large_folders_when_installed(monkeypatch):
    from fmnist_edge import predict, preprocess, segment

    assert predict.png_decoder(predict.OPENCV_DECODE_FILES) is preprocess.decode_png_opencv
    monkeypatch.delitem(sys.modules, "cv2", raising=False)  # not imported yet: its import
    assert predict.png_decoder(predict.OPENCV_DECODE_FILES - 1) is None  # costs more
    monkeypatch.setattr(segment, "available", lambda: False)
    assert predict.png_decoder(10 * predict.OPENCV_DECODE_FILES) is None
