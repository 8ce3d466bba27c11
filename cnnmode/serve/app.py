"""`create_app`: the FastAPI application of `cnnmode serve` (also usable inside another ASGI server).

POST /v1/predict (multipart files or JSON base64 images), POST /v1/explain (Grad-CAM), GET /v1/model, /healthz,
/readyz, /metrics, and the web page at /. Every error is a JSON `{"error": ...}` with its status; the server keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from cnnmode.serve.batcher import QueueFull
from cnnmode.serve.images import ImageRejected, from_base64
from cnnmode.serve.limits import BodyLimit
from cnnmode.serve.model import ServedModel
from cnnmode.serve.options import ServeOptions

PAGE = Path(__file__).with_name("page.html")
OPTIONS_ENV = "CNNMODE_SERVE_OPTIONS"  # how `--workers N` hands the options to each worker process


def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    """A JSON error answer."""
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(options: ServeOptions | None = None, model: ServedModel | None = None) -> FastAPI:
    """The app for `options` (or for an already loaded `model`); the model is warmed in the background after
    start-up, and /readyz says when it is done."""
    options = (options or model.options).check()
    state: dict = {"model": model}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(options.threads)
        served = state["model"] or await asyncio.to_thread(ServedModel, options)
        state["model"] = served
        served.batcher.start()
        warming = asyncio.create_task(asyncio.to_thread(served.warm))
        yield
        await warming
        await served.batcher.stop()  # graceful: every accepted image is answered first
        served.close()

    app = FastAPI(title="CNN Mode", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=int(options.max_body_mb * 2**20), timeout_s=options.timeout_s,
                       max_inflight=int(options.max_inflight_mb * 2**20))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if state["model"] is not None and request.url.path in ("/v1/predict", "/v1/explain"):
            state["model"].metrics.requests.labels(str(exc.status_code)).inc()  # e.g. 405: counted like the rest
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "live"}

    @app.get("/readyz")
    async def readyz():
        served = state["model"]
        if served is None or not served.ready:
            return error(503, "warming up", retry_after=1)
        return {"status": "ready", "backend": served.runner.backend, "warmed_batch_sizes": served.sizes}

    @app.get("/v1/model")
    async def model_info() -> dict:
        return state["model"].info()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state["model"].metrics.render(), media_type="text/plain; version=0.0.4")

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY)
    async def predict(request: Request):
        start = time.perf_counter()
        served = state["model"]
        with served.metrics.in_progress.track_inprogress():
            response = await _predict(request, served, options)
        served.metrics.requests.labels(str(response.status_code)).inc()
        served.metrics.latency.observe(time.perf_counter() - start)
        return response

    @app.post("/v1/explain", openapi_extra=EXPLAIN_BODY)
    async def explain(request: Request):
        return await _explain(request, state["model"], options)

    return app


async def _explain(request: Request, served: ServedModel, options: ServeOptions) -> JSONResponse:
    if not served.ready:
        return error(503, "the model is warming up", retry_after=1)
    if served.explainer is None:
        return error(501, f"Grad-CAM needs the PyTorch model (model.pt); this server runs {served.file.name}")
    try:
        names, blobs, params = await _read_request(request, options)
        if len(blobs) != 1:
            raise ImageRejected(422, f"send one image to explain, not {len(blobs)}")
        image = await served.decode(blobs[0])
        target = params.get("class")
        result = await asyncio.wait_for(served.explainer.explain(image, str(params.get("method", "gradcam")),
                                                                 None if target in (None, "") else str(target)),
                                        options.timeout_s)
    except ImageRejected as e:
        return error(e.status, str(e))
    except asyncio.TimeoutError:
        return error(504, f"no answer within --timeout-s {options.timeout_s:g} s")
    return JSONResponse({"file": names[0], **result})


async def _predict(request: Request, served: ServedModel, options: ServeOptions) -> JSONResponse:
    if not served.ready:
        return error(503, "the model is warming up", retry_after=1)
    try:
        names, blobs, params = await _read_request(request, options)
        topk, threshold = _predict_params(params, len(served.runner.classes))
    except ImageRejected as e:
        return error(e.status, str(e))
    start = time.perf_counter()
    try:
        results = await asyncio.wait_for(served.classify(blobs), options.timeout_s)
    except QueueFull as e:
        return error(503, f"busy: {e}; retry shortly", retry_after=1)
    except asyncio.TimeoutError:
        return error(504, f"no answer within --timeout-s {options.timeout_s:g} s")
    if len(results) == 1 and isinstance(results[0], ImageRejected):  # a single bad image fails its request
        return error(results[0].status, f"{names[0]}: {results[0]}")
    classes = served.runner.classes
    entries = []
    for name, result in zip(names, results):
        if isinstance(result, ImageRejected):
            entries.append({"file": name, "error": str(result), "status": result.status})
            continue
        result, score = result[:len(classes)], (float(result[-1]) if len(result) > len(classes) else None)
        top = result.topk(topk)
        pairs = [{"class": classes[int(i)], "probability": round(float(p), 6)} for p, i in zip(top.values, top.indices)]
        if served.runner.multilabel:  # label sets: the labels present, most probable first, and every probability
            present = served.runner.present(result[None], threshold)[0]
            entries.append({"file": name, "top": pairs, "labels": [classes[i] for i in present],
                            "probs": {c: round(float(p), 6) for c, p in zip(classes, result)}})
        else:
            entry = {"file": name, "label": pairs[0]["class"], "top": pairs,
                     "uncertain": pairs[0]["probability"] < threshold}
            if score is not None:  # --reject: an image unlike the training classes has no label
                unknown = score > served.reject_at
                entry |= {"label": None if unknown else entry["label"], "unknown": unknown, "ood_score": round(score, 4)}
            entries.append(entry)
    return JSONResponse({"predictions": entries, "model": served.info()["name"], "backend": served.runner.backend,
                         "latency_ms": round(1000 * (time.perf_counter() - start), 2)})


async def _read_request(request: Request, options: ServeOptions) -> tuple[list[str], list[bytes], dict]:
    """(names, bytes, parameters) from multipart files or JSON {"images": [base64, ...]}."""
    kind = request.headers.get("content-type", "")
    params: dict = dict(request.query_params)
    if kind.startswith("multipart/form-data"):
        form = await _form(request, options)
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        names = [f.filename or f"image{i}" for i, f in enumerate(files)]
        blobs = [await f.read() for f in files]
        params |= {k: v for k, v in form.multi_items() if isinstance(v, str)}
    elif kind.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ImageRejected(422, "the body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise ImageRejected(422, 'send JSON {"images": [base64, ...], "topk": K, "threshold": P}')
        blobs = [from_base64(text) for text in body["images"]]
        names = [f"image{i}" for i in range(len(blobs))]
        params |= {k: body[k] for k in ("topk", "threshold", "method", "class") if k in body}
        if "topk" in body and (not isinstance(body["topk"], int) or isinstance(body["topk"], bool)):
            raise ImageRejected(422, f"topk must be a whole number (got {body['topk']!r})")
    else:
        raise ImageRejected(415, "send images as multipart/form-data files or as JSON {\"images\": [base64, ...]}")
    if not blobs:
        raise ImageRejected(422, "no images in the request")
    if len(blobs) > options.max_images:
        raise ImageRejected(413, f"{len(blobs)} images is more than --max-images ({options.max_images})")
    return names, blobs, params


async def _form(request: Request, options: ServeOptions):
    """The multipart form, with its limits: too many files is 413 (as --max-images says), a malformed body 422."""
    from starlette.formparsers import MultiPartException

    try:
        return await request.form(max_files=options.max_images, max_fields=16)
    except (MultiPartException, HTTPException) as e:
        text = str(getattr(e, "detail", None) or getattr(e, "message", None) or e)
        if "Too many files" in text:
            raise ImageRejected(413, f"more files than --max-images ({options.max_images})") from None
        raise ImageRejected(422, f"malformed multipart body: {text}") from None


def _whole(value, name: str) -> int:
    """A whole number from JSON (an int, not a bool or a fraction) or from a form field (its digits)."""
    if isinstance(value, bool) or isinstance(value, float) or (isinstance(value, str) and not value.strip().isdigit()):
        raise ImageRejected(422, f"{name} must be a whole number (got {value!r})")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImageRejected(422, f"{name} must be a whole number (got {value!r})") from None


def _predict_params(params: dict, num_classes: int) -> tuple[int, float]:
    """(topk, threshold) of a predict request, checked."""
    topk = _whole(params.get("topk", 5), "topk")
    try:
        threshold = params.get("threshold", 0.0)
        if isinstance(threshold, bool):
            raise ValueError
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ImageRejected(422, "topk must be a whole number and threshold a number") from None
    if topk < 1 or not 0 <= threshold <= 1:
        raise ImageRejected(422, "topk must be >= 1 and threshold in [0, 1]")
    return min(topk, num_classes), threshold


PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "topk": {"type": "integer", "minimum": 1}, "threshold": {"type": "number", "minimum": 0, "maximum": 1}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
        "topk": {"type": "integer", "minimum": 1}, "threshold": {"type": "number", "minimum": 0, "maximum": 1}}}}}}}


EXPLAIN_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": 1},
        "method": {"type": "string", "enum": ["gradcam", "gradcam++"]}, "class": {"type": "string"}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}, "maxItems": 1},
        "method": {"type": "string", "enum": ["gradcam", "gradcam++"]}, "class": {"type": "string"}}}}}}}


def app_from_env() -> FastAPI:
    """The app of one `--workers N` worker process (options passed in the environment). The worker ends itself
    when the process that started it is gone (a `kill -9` of `cnnmode serve`), so no orphan keeps the port."""
    watch_parent(os.getppid())
    return create_app(ServeOptions(**json.loads(os.environ[OPTIONS_ENV])))


def watch_parent(parent: int, every_s: float = 0.5) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM (a graceful stop) once its parent `parent` has died (the
    process is then re-parented, so getppid() changes)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)
    thread = threading.Thread(target=watch, daemon=True, name="cnnmode-parent-watch")
    thread.start()
    return thread
