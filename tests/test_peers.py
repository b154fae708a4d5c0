"""benchmarks/peers.py, peak.py and predict_throughput.py on the small fixture models (no
TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def test_peers_time_every_runtime_of_each_file_and_name_the_fastest(bench_script, test_split):
    peers = bench_script("peers")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    paths = [FIXTURES / "mlp_int8.tflite", FIXTURES / "mlp_int8.onnx"]
    result = peers.compare(paths, test_split[0][:8], rounds=2, calls=5, warmup=2,
                           peak={"int8": 100.0, "fp32": 50.0})
    rows = result["rows"]
    ran = {(Path(r["model"]).suffix, r["peer"]) for r in rows}
    skipped = set(result["skipped"])
    for suffix, names in peers.PEERS.items():
        for name in names:
            assert (suffix, name) in ran or name in skipped
    assert {(".tflite", "fmnist-edge"), (".tflite", "litert"), (".onnx", "fmnist-edge"),
            (".onnx", "onnxruntime")} <= ran
    for path in paths:
        mine = [r for r in rows if r["model"] == str(path)]
        assert min(r["ratio"] for r in mine) == 1.0
        fastest = min(mine, key=lambda r: r["p50_us"])
        assert fastest["ratio_paired"] == 1.0 and all(r["ratio_paired"] > 0 for r in mine)
        assert all(r["calls"] == 10 and 0 < r["p50_us"] <= r["p99_us"] for r in mine)
        # the fixture's card names no zoo record: no MAC count, so no compute bound
        assert all("x_bound" not in r for r in mine)


def test_a_peer_that_cannot_load_a_file_is_recorded_and_the_others_run(bench_script, test_split,
                                                                       monkeypatch):
    peers = bench_script("peers")
    pytest.importorskip("onnxruntime")

    def refuses(path, images):
        raise RuntimeError("No suitable implementations.\n  (plugin detail)")
    monkeypatch.setitem(peers.PEERS[".onnx"], "openvino", refuses)
    path = FIXTURES / "mlp_int8.onnx"
    result = peers.compare([path], test_split[0][:4], rounds=1, calls=2, warmup=1)
    assert result["failed"] == [{"model": str(path), "peer": "openvino",
                                 "error": "RuntimeError: No suitable implementations. "
                                          "(plugin detail)"}]
    assert {r["peer"] for r in result["rows"]} == {"fmnist-edge", "onnxruntime"}


def test_peers_refuse_a_file_that_is_not_a_model(bench_script, tmp_path):
    with pytest.raises(ValueError, match="notes.txt"):
        bench_script("peers").compare([tmp_path / "notes.txt"], np.zeros((1, 28, 28), np.uint8))


def test_peak_measures_int8_and_fp32_gemm_rates(bench_script):
    pytest.importorskip("onnxruntime")
    peak = bench_script("peak")
    result = peak.measure(rounds=2, calls=1, shape=(16, 64, 64))
    assert set(result["peak_gmacs"]) == {"int8", "fp32"}
    assert all(k["gmacs_median"] > 0 for k in result["kernels"].values())
    assert peak.compute_bound_us(29_128_448, 100.0) == pytest.approx(291.28448)


def test_predict_throughput_times_each_thread_setting_in_turn(bench_script, test_split, tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from fmnist_edge.runtime import load

    script = bench_script("predict_throughput")
    for i, image in enumerate(test_split[0][:6]):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    model = FIXTURES / "mlp_int8.onnx"
    runtimes = {"1": load(model, num_threads=1), "library default": load(model)}
    result = script.measure(tmp_path, runtimes, cores=1, rounds=2)
    assert set(result) == {"1", "library default"}
    assert all(count == 6 and r > 0 for r, count in result.values())


def test_predict_breakdown_times_every_stage_per_image(bench_script, test_split, tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from fmnist_edge.runtime import load

    script = bench_script("predict_breakdown")
    for i, image in enumerate(test_split[0][:10]):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    runtime = load(FIXTURES / "mlp_int8.onnx", num_threads=1)
    stages = script.png_stages(tmp_path, runtime)
    assert [stage() for stage in stages.values()] == [10] * len(stages)  # every image, once
    result = script.per_image(stages, rounds=2)
    assert {"read", "general path", "short path, OpenCV", "predict"} <= set(result)
    assert all(us > 0 for us in result.values())
    photo = tmp_path / "photo.jpg"
    Image.fromarray(test_split[0][0]).resize((200, 200)).convert("RGB").save(photo)
    assert [s() for s in script.photo_stages([photo], runtime).values()] == [1, 1, 1]


def test_machine_records_the_best_int8_instructions():
    from fmnist_edge.provenance import int8_isa, machine

    assert int8_isa({"avx2", "avx512bw", "avx512_vnni", "amx_int8"}) == "amx_int8"
    assert int8_isa({"fma", "avx2", "avx512bw"}) == "avx512bw"
    assert int8_isa({"asimd", "asimddp", "fp"}) == "asimddp"
    assert int8_isa({"sse4_2"}) is None
    assert "int8_isa" in machine()


@pytest.mark.parametrize("script, args", [
    ("predict_memory", ["--exe", "fmnist-edge", "--out", "{tmp}/out.json", "--data-dir",
                        "{tmp}/no-data"]),
    ("peers", ["{tmp}/missing.tflite", "--out", "{tmp}/out.json"]),
])
def test_benchmark_scripts_end_a_user_error_with_its_message_not_a_traceback(script, args,
                                                                              tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"),
                          *[a.format(tmp=tmp_path) for a in args]],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert str(tmp_path) in out.stderr  # names the file or folder
    assert not (tmp_path / "out.json").exists()


def test_paired_compare_counts_the_discordant_images_and_tests_them(bench_script):
    paired = bench_script("paired_compare")
    labels = np.arange(12) % 10
    logits_a = np.eye(10, dtype=np.float32)[labels]  # A right on all 12
    logits_b = logits_a.copy()
    logits_b[:3] = np.roll(logits_b[:3], 1, axis=1)  # B wrong on the first 3
    logits_a[11] = np.roll(logits_a[11], 1)          # A wrong on the last one
    result = paired.compare(logits_a, logits_b, labels)
    assert (result["only_a_right"], result["only_b_right"]) == (3, 1)
    assert (result["both_right"], result["neither_right"]) == (8, 0)
    assert result["top1_a"] == pytest.approx(11 / 12) and result["top1_b"] == pytest.approx(9 / 12)
    # exact two-sided binomial: 2 * P(X <= 1 | n = 10, p = 0.5) = 2 * 11 / 1024
    assert paired.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert paired.mcnemar_exact(9, 1) == paired.mcnemar_exact(1, 9)
    assert paired.mcnemar_exact(0, 0) == 1.0
