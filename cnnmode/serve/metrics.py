"""Prometheus metrics of one server (its own registry, so several apps can live in one process). Every series of a
model carries `model` and `version` labels; `ModelMetrics` is one model version's view of them."""
from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MODEL = ("model", "version")
SECONDS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


class ServeMetrics:
    """Requests by status, request latency split into queue wait and compute, batches and their sizes, images,
    images/s and queue depth per model version; requests turned away by the access rules, by reason."""

    def __init__(self, max_batch_size: int) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("cnnmode_requests", "HTTP requests to predict by status code", [*MODEL, "status"],
                                registry=r)
        self.in_progress = Gauge("cnnmode_requests_in_progress", "requests to predict being answered", MODEL,
                                 registry=r)
        self.latency = Histogram("cnnmode_request_latency_seconds", "time from request to answer", MODEL,
                                 registry=r, buckets=SECONDS)
        self.queue_wait = Histogram("cnnmode_queue_wait_seconds", "time an image waits for its batch to start",
                                    MODEL, registry=r, buckets=SECONDS)
        self.compute = Histogram("cnnmode_batch_compute_seconds", "time one model call takes", MODEL, registry=r,
                                 buckets=SECONDS)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch_size})
        self.batch_size = Histogram("cnnmode_batch_size", "images per model call (its count: batches run)", MODEL,
                                    registry=r, buckets=[s for s in sizes if s <= max_batch_size])
        self.images = Counter("cnnmode_images", "images classified", MODEL, registry=r)
        self.depth = Gauge("cnnmode_queue_depth", "images waiting for a batch", MODEL, registry=r)
        self.rate = Gauge("cnnmode_images_per_second", "images classified per second over the last 10 s", MODEL,
                          registry=r)
        self.refused = Counter("cnnmode_refused", "requests turned away: unauthorized (401), forbidden (403), "
                               "rate_limited (429)", ["reason"], registry=r)
        self.swaps = Counter("cnnmode_model_loads", "model versions loaded after start-up, by outcome",
                             ["model", "outcome"], registry=r)

    def of(self, model: str, version: str, queue_depth) -> "ModelMetrics":
        """The series of one model version (`queue_depth()`: its images waiting)."""
        return ModelMetrics(self, model, version, queue_depth)

    def render(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)


class ModelMetrics:
    """One model version's series, with the labels bound."""

    def __init__(self, parent: ServeMetrics, model: str, version: str, queue_depth) -> None:
        labels = {"model": model, "version": version}
        self.parent, self.labels = parent, labels
        self.in_progress = parent.in_progress.labels(**labels)
        self.latency = parent.latency.labels(**labels)
        self.queue_wait = parent.queue_wait.labels(**labels)
        self.compute = parent.compute.labels(**labels)
        self.batch_size = parent.batch_size.labels(**labels)
        self.images = parent.images.labels(**labels)
        parent.depth.labels(**labels).set_function(queue_depth)
        parent.rate.labels(**labels).set_function(self.images_per_second)
        self._recent: deque[tuple[float, int]] = deque()

    def request(self, status: int) -> None:
        """Count one answered request by its status."""
        self.parent.requests.labels(**self.labels, status=str(status)).inc()

    def batch(self, size: int, seconds: float, waits: list[float]) -> None:
        """Record one model call of `size` images taking `seconds`, whose images waited `waits` seconds."""
        self.batch_size.observe(size)
        self.compute.observe(seconds)
        for wait in waits:
            self.queue_wait.observe(wait)
        self.images.inc(size)
        now = time.monotonic()
        self._recent.append((now, size))
        while self._recent and self._recent[0][0] < now - 10:
            self._recent.popleft()

    def images_per_second(self) -> float:
        now = time.monotonic()
        return sum(n for t, n in self._recent if t >= now - 10) / 10

    def forget(self) -> None:
        """Drop this version's series (it was unloaded)."""
        p, values = self.parent, tuple(self.labels.values())
        for metric in (p.in_progress, p.latency, p.queue_wait, p.compute, p.batch_size, p.images, p.depth, p.rate):
            try:
                metric.remove(*values)
            except KeyError:
                pass
