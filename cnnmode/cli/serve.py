"""`cnnmode serve`: the model over HTTP (FastAPI + uvicorn) with dynamic batching, limits, metrics and a web page."""
from __future__ import annotations

import argparse
import json
import os

from cnnmode.cli.common import add_option_flags, options_from_args
from cnnmode.errors import UsageError
from cnnmode.serve.options import ServeOptions


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cnnmode.serve.access import read_keys
    from cnnmode.serve.app import OPTIONS_ENV, create_app
    from cnnmode.serve.catalog import Catalog
    from cnnmode.serve.metrics import ServeMetrics

    options = options_from_args(ServeOptions, args).check()
    keys = read_keys(options.api_keys)  # a bad keys file is one line before anything loads
    check_port_free(options.host, options.port)
    catalog = Catalog(options, ServeMetrics(options.max_batch_size))
    catalog.load_all()  # loaded here first: a model that cannot be loaded is one line and a non-zero exit
    for model in catalog.all():
        print(f"serving {model.file} as '{model.name}' ({model.runner.describe()})", flush=True)
    access = (f"{len(keys)} API key(s)" if keys else "no API keys: anyone who reaches the port may call it") + \
        (f", {options.rate_limit} per caller" if options.rate_limit else "")
    print(f"on http://{options.host}:{options.port}: {options.workers} worker(s) x {options.threads} thread(s), "
          f"batches of up to {options.max_batch_size} images within {options.max_wait_ms:g} ms; {access}; page at "
          f"/, API at /docs (its UI loads from a CDN; /openapi.json works offline)", flush=True)
    if options.workers == 1:
        uvicorn.run(create_app(options, catalog), host=options.host, port=options.port, log_level="warning")
    else:
        os.environ[OPTIONS_ENV] = json.dumps(options.to_dict())
        uvicorn.run("cnnmode.serve.app:app_from_env", factory=True, host=options.host, port=options.port,
                    workers=options.workers, log_level="warning")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Refuse, before the model loads and before "serving on" is printed, an address something already holds."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no obstacle
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); is another server using the "
                             "port? choose another with --port") from None


def add_parsers(verbs) -> None:
    """The serve verb."""
    p = verbs.add_parser("serve", help="serve a model over HTTP: API with dynamic batching, metrics, web page",
                         description="Serve a run folder, model.pt artifact or exported .onnx/.ts file. Endpoints: "
                                     "POST /v1/predict (multipart files, JSON base64 images or one raw image), POST "
                                     "/v1/explain (Grad-CAM for one image), GET /v1/model; with several models "
                                     "(NAME=PATH ...) /v1/models and /v1/models/NAME[@VERSION]/predict|explain; POST "
                                     "/v1/models/NAME/load (or SIGHUP) loads a new version from disk without "
                                     "dropping a request; /healthz, /readyz (after warm-up), /metrics (Prometheus), "
                                     "and a web page at /.")
    add_option_flags(p, ServeOptions, positional=("target",))
    p.set_defaults(func=cmd_serve)
