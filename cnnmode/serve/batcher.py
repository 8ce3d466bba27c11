"""Dynamic batching: an asyncio queue in front of one inference thread.

Every image is one queue item, so a batch closes at `max_batch_size` images (never more, whatever the clients
send) or when the oldest waiting image has waited `max_wait_ms`, whichever comes first; and at once when no
request is on its way (none being decoded: see `arriving`), so a lone client never waits for a batch that nobody
else will fill. Each image gets its own
future, so one request's bad image or cancelled wait touches no other request, and an exception while running
a batch fails that batch's requests only: the loop goes on.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


class QueueFull(Exception):
    """More images are waiting than the server accepts (answered 503 with Retry-After)."""


@dataclass
class _Item:
    image: torch.Tensor
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects single images into batches for `forward` (batch → logits), run on one dedicated thread."""

    def __init__(self, forward: Forward, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024,
                 on_batch: Callable[[int, float, list[float]], None] | None = None) -> None:
        self.forward, self.max_batch_size, self.max_wait = forward, max_batch_size, max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnmode-infer")
        self._task: asyncio.Task | None = None
        self._arriving = 0

    @property
    def depth(self) -> int:
        """Images waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    @contextlib.contextmanager
    def arriving(self):
        """Mark a request whose images are being decoded: while one is, an open batch waits for it (up to
        `max_wait_ms`); when none is, the batch runs at once."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every image already queued (graceful shutdown), then stop the loop and the inference thread."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=True)

    async def infer(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a stack of preprocessed images, batched with whatever else is waiting."""
        if self.depth + len(images) > self.max_queue:
            raise QueueFull(f"{self.depth} images are waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        for item in items:
            self._queue.put_nowait(item)
        return torch.stack(await asyncio.gather(*(item.future for item in items)))

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].queued_at + self.max_wait
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._arriving:
                    break
                await asyncio.sleep(min(remaining, 0.001))  # polling: wait_for(queue.get()) can lose an item
            try:
                await self._run(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]  # a request that gave up is not computed
        if not live:
            return
        start = time.perf_counter()
        waits = [start - item.queued_at for item in live]
        try:
            logits = await asyncio.get_running_loop().run_in_executor(
                self._thread, self.forward, torch.stack([item.image for item in live]))
        except Exception as e:  # this batch's requests fail; the loop and later batches go on
            for item in live:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        for item, row in zip(live, logits):
            if not item.future.done():
                item.future.set_result(row)
        if self.on_batch is not None:
            self.on_batch(len(live), time.perf_counter() - start, waits)
