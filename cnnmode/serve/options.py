"""What `cnnmode serve` is told: the one options object from the command line to the app and its parts."""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

from cnnmode.config import opt
from cnnmode.deploy.options import COVERAGE_HELP, DEVICE_HELP, REJECT_HELP
from cnnmode.errors import UsageError


MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BACKENDS_HELP = ("eager, eager-bf16, compile, torchscript, onnxruntime, int8, int8-x86, openvino, openvino-int8 "
                 "(an exported file runs on its own runtime)")


def default_threads() -> int:
    """The torch threads a server takes by default: its CPU affinity (taskset, a container's cpuset), capped by
    OMP_NUM_THREADS when that is set."""
    from cnnmode.machine import usable_cores

    cores = usable_cores()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(omp)) if omp.isdigit() and int(omp) > 0 else cores


@dataclass
class ServeOptions:
    """Everything the server needs; every field is a `cnnmode serve` flag of the same name, with its default and
    help text here only."""
    target: str | list[str] = opt(None, "a run folder, a model.pt artifact, an exported .onnx/.ts file, or a "
                                  "shipped model's name (see `cnnmode models --pretrained`); several as NAME=PATH "
                                  "each (routes /v1/models/NAME/...)", metavar="[NAME=]MODEL")
    backend: str | None = opt("auto", "runtime backend: auto (the fastest that passes the parity gate on this CPU "
                              "kind), " + BACKENDS_HELP)
    device: str = opt("auto", DEVICE_HELP)
    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = opt(8000, "TCP port")
    max_batch_size: int = opt(32, "images per model call at most")
    max_wait_ms: float = opt(5.0, "how long the first image of a batch waits for others")
    max_queue: int = opt(256, "images waiting at most; more is answered 503 with Retry-After")
    timeout_s: float = opt(30.0, "per-request deadline; later is answered 504")
    max_body_mb: float = opt(20.0, "larger request bodies are answered 413")
    max_inflight_mb: float = opt(256.0, "request bodies being received at once, in all, at most; more is answered "
                                 "503 (with --timeout-s to receive each: slow senders cannot hold memory)")
    max_pixels: int = opt(40_000_000, "larger images are answered 413 (decompression bombs)")
    max_images: int = opt(64, "images in one request at most")
    cache_size: int = opt(0, "LRU cache of results by image hash (0 = off)")
    workers: int = opt(1, "server processes")
    threads: int = opt(0, "torch threads per worker (0 = the cores divided among the workers)")
    calib_data: str | None = opt(None, "real images for the int8 backends (default: a run folder's own data)",
                                 metavar="PATH")
    reject: str = opt("off", REJECT_HELP, metavar="auto|off|T")
    api_keys: str | None = opt(None, "file of API keys, one a line: KEY or sha256:HEX, then the model names it may "
                               "use (none: all) and `admin` to load new versions; also CNNMODE_API_KEYS (lines "
                               "separated by ';')", metavar="FILE")
    protect_metrics: bool = opt(False, "with API keys: /metrics needs a key too (/healthz and /readyz stay open)")
    rate_limit: str | None = opt(None, "requests per key (or per client address without keys), e.g. 10/minute, "
                                 "100/second; more is answered 429 with Retry-After", metavar="N/PERIOD")
    keep_versions: int = opt(2, "versions of a model kept loaded after a swap (name@version picks one)")
    coverage: float | None = opt(None, COVERAGE_HELP, metavar="SHARE")

    def check(self) -> "ServeOptions":
        """Refuse impossible values in one line; resolve `threads` so that workers x threads fit the cores this
        process may use (its affinity), and by default OMP_NUM_THREADS when that is set."""
        from cnnmode.machine import usable_cores

        cores = usable_cores()
        positive = {"max_batch_size": self.max_batch_size, "max_queue": self.max_queue, "workers": self.workers,
                    "max_images": self.max_images, "max_pixels": self.max_pixels, "keep_versions": self.keep_versions}
        for name, value in positive.items():
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
        if min(self.max_wait_ms, self.cache_size, self.threads) < 0 or self.timeout_s <= 0 or self.max_body_mb <= 0 \
                or self.max_inflight_mb < self.max_body_mb:
            raise UsageError("--max-wait-ms, --cache-size and --threads must be >= 0; --timeout-s and --max-body-mb "
                             "> 0; --max-inflight-mb at least --max-body-mb")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port must be in 1-65535 (got {self.port})")
        if self.workers * max(self.threads, 1) > cores:
            raise UsageError(f"--workers {self.workers} x --threads {max(self.threads, 1)} is more than the {cores} "
                             "cores: torch processes that share cores run many times slower")
        if not self.threads:
            self.threads = max(1, default_threads() // self.workers)
        self.models()  # names and paths checked
        if self.rate_limit is not None:
            from cnnmode.serve.access import parse_rate

            parse_rate(self.rate_limit)
        return self

    def models(self) -> list[tuple[str, str]]:
        """(name, path) of each model to serve: `NAME=PATH` items, or one bare path named `default`."""
        items = [self.target] if isinstance(self.target, str) else list(self.target or [])
        if not items:
            raise UsageError("give a model to serve: a run folder, model.pt, an exported file or NAME=PATH ...")
        if len(items) == 1 and "=" not in items[0]:
            return [("default", items[0])]
        pairs = []
        for item in items:
            name, sep, path = item.partition("=")
            if not sep or not MODEL_NAME.fullmatch(name) or not path or name == "admin":
                raise UsageError(f"'{item}': several models are given as NAME=PATH each, NAME of letters, digits, "
                                 "'_', '-' or '.' (not 'admin')")
            pairs.append((name, path))
        names = [n for n, _ in pairs]
        if len(set(names)) < len(names):
            raise UsageError(f"model names must differ: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
        return pairs

    def to_dict(self) -> dict:
        """The options as plain values (how `--workers N` hands them to each worker)."""
        return asdict(self)
