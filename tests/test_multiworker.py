"""--distribute multiworker: two worker processes on localhost (TF_CONFIG, free ports) train
one short epoch together; the chief writes the run folder, the other worker nothing; the
result matches a single-process run of the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

CLI = [sys.executable, "-c", "from fmnist_edge.cli import app; app()"]
ARGS = ["train", "mlp", "--epochs", "1", "--train-limit", "3000", "--val-size", "500",
        "--seed", "3"]


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_together(tmp_path, data_dir):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _ports(2)]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    workers = []
    for index in (0, 1):
        runs_dir = tmp_path / f"runs{index}"
        worker_env = {**env, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [*CLI, *ARGS, "--distribute", "multiworker", "--runs-dir", str(runs_dir),
             "--data-dir", str(data_dir)], env=worker_env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    assert "the chief wrote the run folder" in outputs[1][0]
    assert not (tmp_path / "runs1").exists() or not any((tmp_path / "runs1").rglob("*.keras"))
    run = next((tmp_path / "runs0" / "mlp").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["epochs_run"] == 1
    single = subprocess.run([*CLI, *ARGS, "--runs-dir", str(tmp_path / "single"),
                             "--data-dir", str(data_dir)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = json.loads(next((tmp_path / "single" / "mlp").glob("*/metrics.json")).read_text())
    # Same global batch and data; the two workers see different shards in another order.
    assert abs(metrics["top1_accuracy"] - alone["top1_accuracy"]) < 0.05


def test_multiworker_without_tf_config_is_a_clear_error(tmp_path, data_dir):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    done = subprocess.run([*CLI, *ARGS, "--distribute", "multiworker", "--runs-dir",
                           str(tmp_path), "--data-dir", str(data_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "TF_CONFIG" in done.stderr
    assert "Traceback" not in done.stderr
