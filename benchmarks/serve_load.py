"""Load on ``fmnist-edge serve`` from another process on loopback: requests/s and p50/p99
latency at 1, 8 and 32 concurrent clients, each a keep-alive connection POSTing one image
(a 28x28 Fashion-MNIST PNG, and a 400x533 phone photo) in a loop.

    python benchmarks/serve_load.py --exe .venv/bin/fmnist-edge \\
        --out benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist_edge import atomic, data, photos
from fmnist_edge.benchmark import machine, run_script
from fmnist_edge.provenance import provenance


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads POST ``body`` for ``seconds``; latency per request in ms."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client():
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body=body,
                         headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images, labels = data.load_split("test", args.data_dir)
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, "PNG")
    jpg = io.BytesIO()
    photos.reference_photo(images[0], int(labels[0])).save(jpg, "JPEG", quality=90)
    port = _free_port()
    server = subprocess.Popen([args.exe, "serve", "--model", args.model, "--port", str(port)])
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        rows = []
        for name, body in (("28x28 png", png.getvalue()), ("400x533 jpeg photo", jpg.getvalue())):
            for clients in (1, 8, 32):
                row = {"image": name, **load(port, body, clients, args.seconds)}
                rows.append(row)
                print(f"{name:20} {clients:3} clients: {row['requests_per_s']:7.0f} req/s, "
                      f"p50 {row['p50_ms']:6.1f} ms, p99 {row['p99_ms']:6.1f} ms, "
                      f"{row['errors']} errors")
    finally:
        server.terminate()
        server.wait(30)
    atomic.write_json(args.out, {"model": args.model, "seconds_per_setting": args.seconds,
                                 "rows": rows, "machine": machine(),
                                 "provenance": provenance()})


if __name__ == "__main__":
    run_script(main)
