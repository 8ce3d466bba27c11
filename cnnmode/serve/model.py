"""The model being served: loaded once through the runtime registry, warmed, and asked through the batcher."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
from collections import OrderedDict
from typing import Iterator

import torch

from cnnmode.deploy.runtime import open_runner
from cnnmode.rundir import resolve_target
from cnnmode.serve.batcher import Batcher
from cnnmode.serve.explain_endpoint import Explainer
from cnnmode.serve.images import ImageRejected, Preprocessor
from cnnmode.serve.metrics import ServeMetrics
from cnnmode.serve.options import ServeOptions


def warm_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes warmed before the server is ready: powers of two up to the cap, and the cap."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch_size]


class ServedModel:
    """Runner, preprocessing, batcher, metrics and the optional result cache of one served model."""

    def __init__(self, options: ServeOptions, name: str = "default", path: str | None = None, version: int = 1,
                 metrics: ServeMetrics | None = None) -> None:
        self.options, self.name, self.version = options, name, version
        self.path = path if path is not None else options.models()[0][1]
        where = resolve_target(self.path)
        self.checksum = hashlib.sha256(where.file.read_bytes()).hexdigest()
        self.runner, art = open_runner(where, options.backend, options.device, options.calib_data)
        self.file = where.file
        self.reject_at = self.runner.reject_threshold(options.reject, options.coverage)
        self.preprocessor = Preprocessor(self.runner.preprocess, options.max_pixels)
        self.sizes = warm_sizes(options.max_batch_size)
        self.all_metrics = metrics or ServeMetrics(options.max_batch_size)
        self.metrics = self.all_metrics.of(name, str(version), lambda: self.batcher.depth)
        self.batcher = Batcher(self._forward, options.max_batch_size, options.max_wait_ms, options.max_queue,
                               on_batch=self.metrics.batch)
        self.decoder = concurrent.futures.ThreadPoolExecutor(max_workers=options.threads,
                                                             thread_name_prefix="cnnmode-decode")
        self.explainer = Explainer(art) if art is not None else None  # Grad-CAM needs the PyTorch model
        self.art = art
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.ready, self.users = False, 0  # users: requests inside this version (a retired one waits for them)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Count a request as inside this version for as long as the block runs."""
        self.users += 1
        try:
            yield
        finally:
            self.users -= 1

    def info(self) -> dict:
        """What GET /v1/model answers."""
        p = self.runner.preprocess
        return {"model": self.name, "version": self.version,
                "file": self.file.name, "name": self.runner.name, "backend": self.runner.backend,  # no server path
                "classes": self.runner.classes, "checksum": f"sha256:{self.checksum}",
                "preprocess": {k: p[k] for k in ("img_size", "mean", "std", "channels")}
                | {"temperature": self.runner.temperature, "task": p.get("task", "single")}
                | ({"thresholds": p["thresholds"]} if "thresholds" in p else {}),
                "reject": None if self.reject_at is None else {"threshold": self.reject_at,
                                                               "basis": self.runner.reject_note},
                "max_batch_size": self.options.max_batch_size, "max_wait_ms": self.options.max_wait_ms,
                "explain": self.explainer is not None}

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits, with each image's ood score as one more column when the server rejects unknowns."""
        logits, score, _ = self.runner.assess(batch, self.reject_at, next(s for s in self.sizes if s >= len(batch)))
        return logits if score is None else torch.cat([logits, score[:, None]], 1)  # padded to a warmed size

    def warm(self) -> None:
        """Run every batch size the batcher may use once, then mark the server ready."""
        for size in self.sizes:
            self.runner.warm(size)
        self.ready = True

    async def decode(self, blob: bytes) -> torch.Tensor:
        """One image's bytes → the model's input tensor, on the decode threads (raises ImageRejected)."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder, self.preprocessor, blob)

    def close(self) -> None:
        """Stop the decode and explanation threads (after the batcher has drained)."""
        self.decoder.shutdown(wait=True)
        if self.explainer is not None:
            self.explainer.close()

    async def classify(self, blobs: list[bytes]) -> list[torch.Tensor | ImageRejected]:
        """Probabilities for each image (then its ood score, when the server rejects unknowns), or the reason it
        was rejected; decoding runs in the decode threads."""
        keys = [hashlib.sha256(b).hexdigest() if self.options.cache_size else "" for b in blobs]
        out: list = [self._recall(k) for k in keys]
        todo = [i for i, o in enumerate(out) if o is None]
        with self.batcher.arriving():
            decoded = await asyncio.gather(*(self.decode(blobs[i]) for i in todo), return_exceptions=True)
        good = [(i, x) for i, x in zip(todo, decoded) if isinstance(x, torch.Tensor)]
        for i, x in zip(todo, decoded):
            if not isinstance(x, torch.Tensor):
                out[i] = x if isinstance(x, ImageRejected) else ImageRejected(415, f"{type(x).__name__}: {x}")
        if good:
            raw = await self.batcher.infer(torch.stack([x for _, x in good]))
            n = len(self.runner.classes)
            probs = torch.cat([self.runner.probabilities(raw[:, :n]), raw[:, n:]], 1)
            for (i, _), p in zip(good, probs):
                out[i] = p
                self._remember(keys[i], p)
        return out

    def _recall(self, key: str) -> torch.Tensor | None:
        if key and key in self.cache:
            self.cache.move_to_end(key)  # least recently used goes first
            return self.cache[key]
        return None

    def _remember(self, key: str, probs: torch.Tensor) -> None:
        if not key:
            return
        self.cache[key] = probs
        self.cache.move_to_end(key)
        while len(self.cache) > self.options.cache_size:
            self.cache.popitem(last=False)
