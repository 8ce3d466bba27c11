"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""
from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServeMetrics:
    """Requests by status, request latency, queue depth, batch sizes, images and images/s."""

    def __init__(self, max_batch_size: int, queue_depth) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cnnmode_requests", "HTTP requests to /v1/predict by status code", ["status"],
                                registry=self.registry)
        self.in_progress = Gauge("cnnmode_requests_in_progress", "requests to /v1/predict being answered",
                                 registry=self.registry)
        self.latency = Histogram("cnnmode_request_latency_seconds", "time from request to answer", registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch_size})
        self.batch_size = Histogram("cnnmode_batch_size", "images per model call", registry=self.registry,
                                    buckets=[s for s in sizes if s <= max_batch_size])
        self.images = Counter("cnnmode_images", "images classified", registry=self.registry)
        depth = Gauge("cnnmode_queue_depth", "images waiting for a batch", registry=self.registry)
        depth.set_function(queue_depth)
        rate = Gauge("cnnmode_images_per_second", "images classified per second over the last 10 s",
                     registry=self.registry)
        rate.set_function(self.images_per_second)
        self._recent: deque[tuple[float, int]] = deque()

    def batch(self, size: int, seconds: float) -> None:
        """Record one model call of `size` images."""
        self.batch_size.observe(size)
        self.images.inc(size)
        now = time.monotonic()
        self._recent.append((now, size))
        while self._recent and self._recent[0][0] < now - 10:
            self._recent.popleft()

    def images_per_second(self) -> float:
        now = time.monotonic()
        return sum(n for t, n in self._recent if t >= now - 10) / 10

    def render(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
