"""The prediction service over real HTTP on localhost, and its page in headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist_edge import photos
from fmnist_edge.contract import LABELS

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    from fmnist_edge.predict import resolve_model
    from fmnist_edge.serve import Predictor, create_app

    port = _free_port()
    app = create_app(Predictor(resolve_model("default")), max_body_bytes=2 * 2**20,
                     max_concurrency=4)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _request(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _declared_only(server: str, length: int, content_type: str):
    """Send only the headers of a POST declaring ``length`` bytes; read the answer."""
    import http.client

    host, port = server.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    resp = conn.getresponse()
    try:
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _chunked(server: str, blob: bytes, chunk: int = 256 * 1024):
    """POST ``blob`` with chunked transfer encoding (no Content-Length)."""
    import http.client

    host, port = server.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/predict", body=(blob[i:i + chunk]
                                               for i in range(0, len(blob), chunk)),
                     encode_chunked=True)
    except OSError:  # the server may close as soon as the limit is passed
        pass
    resp = conn.getresponse()
    try:
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _multipart(name: str, blob: bytes) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + blob + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def photo_bytes(test_split):
    images, labels = test_split
    buf = io.BytesIO()
    photos.render_phone_photo(images[0], int(labels[0]), np.random.default_rng(2)).save(
        buf, "JPEG")
    return buf.getvalue()


def test_health_and_model_card(server):
    assert _request(f"{server}/healthz") == (200, {"status": "ok"})
    status, card = _request(f"{server}/model")
    assert status == 200 and card["labels"] == list(LABELS) and len(card["sha256"]) == 64


def test_predict_raw_body_and_multipart(server, photo_bytes):
    status, raw = _request(f"{server}/predict", photo_bytes,
                           {"Content-Type": "image/jpeg"})
    assert status == 200, raw
    assert len(raw["top_k"]) == 3 and raw["top_k"][0]["label"] in LABELS
    assert raw["latency_ms"] > 0 and raw["seen_png"].startswith("data:image/png;base64,")
    body, headers = _multipart("shoe.jpg", photo_bytes)
    status, form = _request(f"{server}/predict", body, headers)
    assert status == 200 and form["top_k"] == raw["top_k"]


def test_bad_uploads_get_4xx_json_and_the_server_keeps_serving(server, photo_bytes):
    status, answer = _request(f"{server}/predict", b"\x89PNG\r\n\x1a\n broken")
    assert status == 400 and "cannot decode" in answer["error"]
    status, answer = _request(f"{server}/predict", b"")
    assert status == 400 and "empty" in answer["error"]
    # A 50 MB upload: the server answers 413 from the declared length, before the body.
    for content_type in ("image/jpeg", "multipart/form-data; boundary=x"):
        status, answer = _declared_only(server, 50 * 10**6, content_type)
        assert status == 413 and "bytes" in answer["error"]
    # An upload without a declared length is cut at the limit as it streams in.
    status, answer = _chunked(server, b"z" * (3 * 2**20))
    assert status == 413
    assert _request(f"{server}/predict", photo_bytes)[0] == 200


def test_100_concurrent_requests_all_succeed(server, photo_bytes, test_split):
    small = io.BytesIO()
    Image.fromarray(test_split[0][1]).save(small, "PNG")
    blobs = [photo_bytes if i % 2 else small.getvalue() for i in range(100)]
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda b: _request(f"{server}/predict", b), blobs))
    assert [status for status, _ in results] == [200] * 100
    assert len({json.dumps(r["top_k"]) for s, r in results[1::2]}) == 1  # same photo, same answer


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)")
def test_page_in_a_headless_browser(server, photo_bytes, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "shoe.jpg"
    photo.write_bytes(photo_bytes)
    expected = _request(f"{server}/predict", photo_bytes)[1]["top_k"][0]["label"]
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(server)
        assert not driver.find_element(By.ID, "result").is_displayed()  # no answer yet
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "result")))
        assert driver.find_element(By.ID, "label").text == expected
        seen = driver.find_element(By.ID, "seen").get_attribute("src")
        assert seen.startswith("data:image/png;base64,")
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


def test_serve_command_refuses_bad_options():
    from typer.testing import CliRunner

    from fmnist_edge.cli import app

    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 1 and "--port" in result.output
    result = CliRunner().invoke(app, ["serve", "--model", str(Path("/nonexistent.onnx"))])
    assert result.exit_code == 1 and "nonexistent.onnx" in result.output
