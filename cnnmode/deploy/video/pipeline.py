"""Overlap the three stages of a file's video run: decoding frames, classifying them, and drawing + encoding the
output. OpenCV's decoder and encoder release the GIL, so on a few cores a decode thread and a write thread run
beside the model instead of taking turns with it. Live sources keep their own capture thread (newest frame only)."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], depth: int = 32) -> Iterator[T]:
    """`items`, produced by a background thread at most `depth` ahead of the consumer; an exception raised while
    producing is raised to the consumer in order. Closing the returned generator stops the thread."""
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, item, stop):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            _put(ready, _Failure(e), stop)
            return
        _put(ready, _END, stop)

    thread = threading.Thread(target=produce, name="cnnmode-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class Background:
    """Runs `work(item)` for each submitted item, in order, in one background thread (at most `depth` waiting);
    `close()` finishes the queue and re-raises the first error the work raised."""

    def __init__(self, work: Callable[[object], None], depth: int = 32) -> None:
        self.work, self.todo, self.error = work, queue.Queue(depth), None
        self.thread = threading.Thread(target=self._run, name="cnnmode-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.todo.get()) is not _END:
            if self.error is None:
                try:
                    self.work(item)
                except BaseException as e:  # kept for the caller; the queue is still drained
                    self.error = e

    def submit(self, item: object) -> None:
        """Queue one item (blocks while `depth` are waiting); raises at once if earlier work failed."""
        if self.error is not None:
            raise self.error
        self.todo.put(item)

    def close(self) -> None:
        """Wait for the queued work to finish; re-raise its first error."""
        self.todo.put(_END)
        self.thread.join()
        if self.error is not None:
            raise self.error


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put unless the consumer has gone away (then False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
