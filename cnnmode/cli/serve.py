"""`cnnmode serve`: the model over HTTP (FastAPI + uvicorn) with dynamic batching, limits, metrics and a web page."""
from __future__ import annotations

import argparse
import json
import os


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cnnmode.serve.app import OPTIONS_ENV, create_app
    from cnnmode.serve.model import ServedModel
    from cnnmode.serve.options import ServeOptions

    fields = ServeOptions.__dataclass_fields__
    options = ServeOptions(**{k: v for k, v in vars(args).items() if k in fields}).check()
    model = ServedModel(options)  # loaded here first: a model that cannot be loaded is one line and a non-zero exit
    print(f"serving {model.file} ({model.runner.describe()}) on http://{options.host}:{options.port}: "
          f"{options.workers} worker(s) x {options.threads} thread(s), batches of up to {options.max_batch_size} "
          f"images within {options.max_wait_ms:g} ms; page at /, API at /docs", flush=True)
    if options.workers == 1:
        uvicorn.run(create_app(options, model), host=options.host, port=options.port, log_level="warning")
    else:
        os.environ[OPTIONS_ENV] = json.dumps(options.to_dict())
        uvicorn.run("cnnmode.serve.app:app_from_env", factory=True, host=options.host, port=options.port,
                    workers=options.workers, log_level="warning")
    return 0


def add_parsers(verbs) -> None:
    """The serve verb."""
    p = verbs.add_parser("serve", help="serve a model over HTTP: API with dynamic batching, metrics, web page",
                         description="Serve a run folder, model.pt artifact or exported .onnx/.ts file. Endpoints: "
                                     "POST /v1/predict (multipart files or JSON base64 images), POST /v1/explain "
                                     "(Grad-CAM for one image), GET /v1/model, "
                                     "/healthz, /readyz (after warm-up), /metrics (Prometheus), and a web page at /.")
    p.add_argument("target", metavar="ARTIFACT_OR_RUN_OR_EXPORTED_FILE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", default="auto",
                   help="runtime backend: auto (default: the fastest that passes the parity gate on this CPU kind), "
                        "eager, eager-bf16, compile, torchscript, onnxruntime, int8, int8-x86, openvino, "
                        "openvino-int8 (an exported file runs on its own runtime)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-batch-size", type=int, default=32, help="images per model call at most")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long the first image waits for others")
    p.add_argument("--max-queue", type=int, default=256, help="images waiting at most; more is answered 503")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request deadline; later is answered 504")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="larger request bodies are answered 413")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="larger images are answered 413")
    p.add_argument("--max-images", type=int, default=64, help="images in one request at most")
    p.add_argument("--cache-size", type=int, default=0, help="LRU cache of results by image hash (0 = off)")
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--calib-data", metavar="PATH", help="real images for the int8 backends (default: the run's)")
    p.set_defaults(func=cmd_serve)
