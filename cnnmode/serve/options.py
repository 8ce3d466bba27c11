"""What `cnnmode serve` is told: the one options object from the command line to the app and its parts."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from cnnmode.errors import UsageError


@dataclass
class ServeOptions:
    """Everything the server needs; every field is a `cnnmode serve` flag of the same name."""
    target: str  # a run folder, a model.pt artifact, or an exported .onnx/.ts file
    backend: str | None = "auto"  # runtime backend (auto: by the CPU kind; an exported file runs on its own)
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256  # images waiting; more is answered 503 with Retry-After
    timeout_s: float = 30.0  # per-request deadline; later is answered 504
    max_body_mb: float = 20.0  # 413 above this
    max_pixels: int = 40_000_000  # 413 above this many pixels in one image (decompression bombs)
    max_images: int = 64  # images in one request
    cache_size: int = 0  # LRU cache of results by image hash (0 = off)
    workers: int = 1
    threads: int = 0  # torch threads per worker (0 = the cores divided among the workers)
    calib_data: str | None = None  # real images for the int8 backends (default: a run folder's own data)

    def check(self) -> "ServeOptions":
        """Refuse impossible values in one line; resolve `threads` so that workers x threads fit the cores."""
        cores = os.cpu_count() or 1
        positive = {"max_batch_size": self.max_batch_size, "max_queue": self.max_queue, "workers": self.workers,
                    "max_images": self.max_images, "max_pixels": self.max_pixels}
        for name, value in positive.items():
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
        if min(self.max_wait_ms, self.cache_size, self.threads) < 0 or self.timeout_s <= 0 or self.max_body_mb <= 0:
            raise UsageError("--max-wait-ms, --cache-size and --threads must be >= 0; --timeout-s and --max-body-mb > 0")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port must be in 1-65535 (got {self.port})")
        if self.workers * max(self.threads, 1) > cores:
            raise UsageError(f"--workers {self.workers} x --threads {max(self.threads, 1)} is more than the {cores} "
                             "cores: torch processes that share cores run many times slower")
        if not self.threads:
            self.threads = max(1, cores // self.workers)
        return self

    def to_dict(self) -> dict:
        return asdict(self)
