"""A prediction service: ``fmnist-edge serve`` (the ``serve`` extra: Starlette + uvicorn).

Routes:
    ``POST /predict``  an image as a multipart upload (any field name) or as the raw body;
                       JSON ``{"top_k", "latency_ms", "model_sha256", "segment", "fallback",
                       "seen_png"}`` (``seen_png``: the 28x28 the model saw, a PNG data URL).
    ``GET /healthz``   ``{"status": "ok"}``.
    ``GET /model``     the model card (:func:`fmnist_edge.model_info.model_info`).
    ``GET /``          a page to upload or drop a photo and see what the model saw.

Limits, each a bad request answered in JSON with the reason, never a crash: the body size
(413), the decoded pixels (400, ``--max-pixels``), images that do not decode (400), and the
number of requests converted and classified at once (the rest wait their turn).
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmnist_edge.contract import LABELS, softmax, top_classes
from fmnist_edge.preprocess import MAX_PIXELS, ImageError, load_image

#: Largest request body accepted by default, bytes (a 12 Mpx phone JPEG is 3-6 MB).
MAX_BODY_BYTES = 16 * 2**20
#: Requests converted and classified at the same time by default; others wait.
MAX_CONCURRENCY = 4

PAGE = (Path(__file__).parent / "static" / "index.html")


def _png_data_url(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Predictor:
    """The model behind the service: thread-safe conversion + classification of image bytes.

    Args:
        model: model file.
        top_k: classes returned per image.
        max_pixels: decoded-pixel limit (see :func:`fmnist_edge.preprocess.open_image`).
        num_threads: runtime threads.
    """

    def __init__(self, model: Path, *, top_k: int = 3, max_pixels: int = MAX_PIXELS,
                 num_threads: int | None = None):
        from fmnist_edge.model_info import model_info
        from fmnist_edge.runtime import load

        self.runtime = load(model, num_threads=num_threads)
        self.info = model_info(Path(model), self.runtime)
        self.top_k, self.max_pixels = top_k, max_pixels
        self._lock = threading.Lock()  # LiteRT interpreters are not thread-safe

    def predict(self, blob: bytes) -> dict[str, Any]:
        """``bytes`` of an image file -> the JSON answer of ``POST /predict``.

        Raises:
            ImageError: the bytes are not a decodable image within the limits.
        """
        start = time.perf_counter()
        stream = io.BytesIO(blob)
        stream.name = "upload"
        prepared = load_image(stream, max_pixels=self.max_pixels)
        with self._lock:
            probs = softmax(self.runtime.logits(prepared.pixels[None]))[0]
        order = top_classes(probs, self.top_k)
        return {
            "top_k": [{"index": int(i), "label": LABELS[i], "probability": float(probs[i])}
                      for i in order],
            "latency_ms": (time.perf_counter() - start) * 1000,
            "model_sha256": self.info["sha256"],
            "segment": prepared.segment, "fallback": prepared.fallback,
            "seen_png": _png_data_url(prepared.pixels),
        }


def create_app(predictor: Predictor, *, max_body_bytes: int = MAX_BODY_BYTES,
               max_concurrency: int = MAX_CONCURRENCY):
    """The Starlette application serving ``predictor``.

    Raises:
        ImportError: the ``serve`` extra is not installed.
    """
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise ImportError(f'serve needs Starlette and uvicorn ({exc}): pip install '
                          '"fmnist-edge[serve]"') from exc
    gate = asyncio.Semaphore(max_concurrency)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request: Request) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        too_big = (f"request body over {max_body_bytes:,} bytes; send a smaller image "
                   "(the model sees 28x28)")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return error(413, too_big)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return error(413, too_big)
            chunks.append(chunk)
        return b"".join(chunks)

    async def image_bytes(request: Request, body: bytes) -> bytes | JSONResponse:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return body
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_part_size=max_body_bytes)
        except Exception as exc:  # malformed multipart: python-multipart's own errors
            return error(400, f"malformed multipart upload ({exc})")
        files = [v for v in form.values() if hasattr(v, "read")]
        if not files:
            return error(400, "the multipart upload holds no file; send the image as a file "
                              "field or as the raw request body")
        return await files[0].read()

    async def predict(request: Request):
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        blob = await image_bytes(request, body)
        if isinstance(blob, JSONResponse):
            return blob
        if not blob:
            return error(400, "empty request body; POST an image file")
        async with gate:
            try:
                answer = await run_in_threadpool(predictor.predict, blob)
            except ImageError as exc:
                return error(400, str(exc).replace("upload: ", "", 1))
        return JSONResponse(answer)

    async def healthz(request: Request):
        return JSONResponse({"status": "ok"})

    async def model(request: Request):
        return JSONResponse(predictor.info)

    async def index(request: Request):
        return HTMLResponse(PAGE.read_text())

    return Starlette(routes=[Route("/", index), Route("/healthz", healthz),
                             Route("/model", model), Route("/predict", predict,
                                                           methods=["POST"])])


def serve(model: Path, *, host: str = "127.0.0.1", port: int = 8000, top_k: int = 3,
          max_body_bytes: int | None = None, max_concurrency: int | None = None,
          max_pixels: int = MAX_PIXELS, num_threads: int | None = None) -> None:
    """Run the service until interrupted (uvicorn, one process); ``None`` limits take
    ``MAX_BODY_BYTES`` and ``MAX_CONCURRENCY``.

    Raises:
        ImportError: the ``serve`` extra is not installed.
        fmnist_edge.runtime.ModelFileError: the model cannot be loaded.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f'serve needs uvicorn ({exc}): pip install "fmnist-edge[serve]"'
                          ) from exc
    app = create_app(Predictor(model, top_k=top_k, max_pixels=max_pixels,
                               num_threads=num_threads),
                     max_body_bytes=max_body_bytes or MAX_BODY_BYTES,
                     max_concurrency=max_concurrency or MAX_CONCURRENCY)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
