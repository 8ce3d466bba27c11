"""`create_app`: the FastAPI application of `cnnmode serve` (also usable inside another ASGI server).

POST /v1/predict and /v1/explain (the first model), /v1/models/{name[@version]}/predict and .../explain, GET
/v1/model, /v1/models, /v1/models/{name}, POST /v1/models/{name}/load (a new version from disk; SIGHUP loads every
model again), /healthz, /readyz, /metrics, and the web page at /. Bodies: multipart files, JSON base64 images, or
one raw image. Every error is a JSON `{"error": ...}` with its status; the server keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from cnnmode.serve.access import Gate, Refused, read_keys
from cnnmode.serve.batcher import QueueFull
from cnnmode.serve.bodies import EXPLAIN_BODY, PREDICT_BODY, predict_params, read_request
from cnnmode.serve.catalog import Catalog, LoadFailed, Unknown
from cnnmode.serve.images import ImageRejected
from cnnmode.serve.limits import BodyLimit
from cnnmode.serve.metrics import ServeMetrics
from cnnmode.serve.model import ServedModel
from cnnmode.serve.options import ServeOptions

PAGE = Path(__file__).with_name("page.html")
OPTIONS_ENV = "CNNMODE_SERVE_OPTIONS"  # how `--workers N` hands the options to each worker process
LOOPBACK = ("127.0.0.1", "::1", "localhost", "testclient")


def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    """A JSON error answer."""
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(options: ServeOptions | None = None, model: ServedModel | Catalog | None = None) -> FastAPI:
    """The app for `options` (or for already loaded models: one `ServedModel` or a `Catalog`); the models are
    warmed in the background after start-up, and /readyz says when all are done."""
    options = (options or model.options).check()
    gate = Gate(read_keys(options.api_keys), options.rate_limit)
    if isinstance(model, Catalog):
        catalog = model
    else:
        catalog = Catalog(options, model.all_metrics if model is not None else ServeMetrics(options.max_batch_size))
        if model is not None:
            catalog.add(model)
    metrics = catalog.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(options.threads)
        await asyncio.to_thread(catalog.load_all)
        for served in catalog.all():
            served.batcher.start()
        warming = [asyncio.create_task(asyncio.to_thread(served.warm)) for served in catalog.all()]
        hangup = _on_sighup(catalog)
        yield
        hangup()
        await asyncio.gather(*warming)
        await catalog.stop()  # graceful: every accepted image is answered first

    app = FastAPI(title="CNN Mode", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=int(options.max_body_mb * 2**20), timeout_s=options.timeout_s,
                       max_inflight=int(options.max_inflight_mb * 2**20))

    def refused(request: Request, model: str | None = None, admin: bool = False) -> JSONResponse | None:
        """None when the caller may go on, else the 401/403/429 answer (counted by reason)."""
        try:
            gate.check(request.headers, request.client.host if request.client else "", model, admin)
        except Refused as e:
            metrics.refused.labels(e.reason).inc()
            return error(e.status, str(e), e.retry_after)
        return None

    def find(spec: str | None, request: Request) -> ServedModel | JSONResponse:
        """The model a request names (its key checked first, so a caller without one learns no model names),
        or the answer that refuses it."""
        if (no := refused(request, (spec or catalog.first).partition("@")[0])) is not None:
            return no
        try:
            return catalog.get(spec)
        except Unknown as e:
            return error(404, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if catalog.versions and request.url.path in ("/v1/predict", "/v1/explain"):
            catalog.get().metrics.request(exc.status_code)  # e.g. 405: counted like the rest
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "live"}

    @app.get("/readyz")
    async def readyz():
        models = catalog.all()
        if not models or not all(m.ready for m in models):
            return error(503, "warming up", retry_after=1)
        first = catalog.get()
        return {"status": "ready", "backend": first.runner.backend, "warmed_batch_sizes": first.sizes,
                "models": {m.name: m.version for m in (catalog.get(n) for n in catalog.versions)}}

    @app.get("/v1/model")
    async def model_info(request: Request):
        served = find(None, request)
        return served if isinstance(served, JSONResponse) else served.info()

    @app.get("/v1/models")
    async def models(request: Request):
        return refused(request) or {"models": catalog.listing(), "needs_key": gate.locked}

    @app.get("/v1/models/{spec}")
    async def one_model(spec: str, request: Request):
        served = find(spec, request)
        return served if isinstance(served, JSONResponse) else served.info()

    @app.get("/metrics")
    async def metrics_text(request: Request) -> Response:
        if options.protect_metrics and gate.locked and (no := refused(request)) is not None:
            return no
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    async def predict_on(spec: str | None, request: Request):
        served = find(spec, request)
        if isinstance(served, JSONResponse):
            return served
        start = time.perf_counter()
        with served.in_use(), served.metrics.in_progress.track_inprogress():
            response = await _predict(request, served, options)
        served.metrics.request(response.status_code)
        served.metrics.latency.observe(time.perf_counter() - start)
        return response

    async def explain_on(spec: str | None, request: Request):
        served = find(spec, request)
        if isinstance(served, JSONResponse):
            return served
        with served.in_use():
            return await _explain(request, served, options)

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY)
    async def predict(request: Request):
        return await predict_on(None, request)

    @app.post("/v1/models/{spec}/predict", openapi_extra=PREDICT_BODY)
    async def predict_model(spec: str, request: Request):
        return await predict_on(spec, request)

    @app.post("/v1/explain", openapi_extra=EXPLAIN_BODY)
    async def explain(request: Request):
        return await explain_on(None, request)

    @app.post("/v1/models/{spec}/explain", openapi_extra=EXPLAIN_BODY)
    async def explain_model(spec: str, request: Request):
        return await explain_on(spec, request)

    @app.post("/v1/models/{name}/load")
    async def load(name: str, request: Request):
        if not gate.locked and (request.client.host if request.client else "") not in LOOPBACK:
            return error(403, "loading a version needs --api-keys with an admin key (or a call from this machine)")
        if (no := refused(request, name, admin=True)) is not None:
            return no
        try:
            served = await catalog.load(name)
        except Unknown as e:
            return error(404, str(e))
        except LoadFailed as e:
            return error(409, str(e))
        return {"loaded": served.info()}

    return app


def _on_sighup(catalog: Catalog):
    """SIGHUP loads every model again from disk (where the platform has it); returns the undo."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        for name in list(catalog.paths):
            try:
                served = await catalog.load(name)
                print(f"SIGHUP: model '{name}' version {served.version} now serving", file=sys.stderr, flush=True)
            except (Unknown, LoadFailed) as e:
                print(f"SIGHUP: {e}", file=sys.stderr, flush=True)

    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


async def _explain(request: Request, served: ServedModel, options: ServeOptions) -> JSONResponse:
    if not served.ready:
        return error(503, "the model is warming up", retry_after=1)
    if served.explainer is None:
        return error(501, f"Grad-CAM needs the PyTorch model (model.pt); this server runs {served.file.name}")
    try:
        names, blobs, params = await read_request(request, options)
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
        names, blobs, params = await read_request(request, options)
        topk, threshold = predict_params(params, len(served.runner.classes))
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
        unknown = score is not None and score > served.reject_at  # --reject: an unknown image has no label(s)
        verdict = {} if score is None else {"unknown": unknown, "ood_score": round(score, 4)}
        if served.runner.multilabel:  # label sets: the labels present, most probable first, and every probability
            present = [] if unknown else served.runner.present(result[None], threshold)[0]
            entries.append({"file": name, "top": pairs, "labels": [classes[i] for i in present],
                            "probs": {c: round(float(p), 6) for c, p in zip(classes, result)}} | verdict)
        else:
            entries.append({"file": name, "label": None if unknown else pairs[0]["class"], "top": pairs,
                            "uncertain": pairs[0]["probability"] < threshold} | verdict)
    return JSONResponse({"predictions": entries, "model": served.runner.name, "served_as": served.name,
                         "version": served.version, "backend": served.runner.backend,
                         "latency_ms": round(1000 * (time.perf_counter() - start), 2)})


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
