"""Where frames come from: a video file (every frame, in order), or a live camera / stream URL read by a capture
thread that keeps only the newest frame, so a slow classifier drops frames instead of falling behind."""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from cnnmode.errors import RunError, UsageError

DEFAULT_FPS = 30.0  # what a source that reports 0 (many webcams) is taken to run at
OPEN_TIMEOUT_MS = 5000
MAX_MISSES = 25  # undecodable frames in a row after which a file is taken to end there


@dataclass
class Frame:
    """One frame: its index in the source, its time in the source, the BGR pixels (None when the frame was only
    grabbed, not decoded) and when it was read (time.perf_counter)."""
    index: int
    time_s: float
    image: np.ndarray | None
    read_at: float


def describe(spec: str) -> str:
    """How a source is named in messages."""
    return f"camera {spec}" if spec.isdigit() else spec


def open_capture(spec: str) -> cv2.VideoCapture:
    """cv2.VideoCapture for a camera index, a stream URL or a file, with open and read timeouts for streams.
    OpenCV's own warnings are silenced: a source that cannot be opened is reported in one line by the caller."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines ("Connection refused"): quiet
    if spec.isdigit():
        return cv2.VideoCapture(int(spec))
    if "://" in spec:
        return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
    return cv2.VideoCapture(spec)


def _geometry(cap) -> tuple[float, tuple[int, int]]:
    """(frames per second, (width, height)) of an open capture; a rate it does not report is DEFAULT_FPS."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return (fps if fps and math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS), size


class FileSource:
    """Every frame of a video file in order; frames that `decode(index)` declines are grabbed, not decoded."""

    live = False

    def __init__(self, path: str) -> None:
        if Path(path).is_dir():
            raise UsageError(f"--source {path} is a folder; give a video file, a camera index such as 0, or a URL")
        if Path(path).exists() and not Path(path).is_file():
            raise UsageError(f"--source {path} is not a regular file (a pipe or a device); give a video file, a "
                             "camera index such as 0, or a stream URL")
        if not Path(path).is_file():
            raise UsageError(f"no such video file: {path} (give a file, a camera index such as 0, or a stream URL)")
        self.name = path
        self.cap = open_capture(path)
        if not self.cap.isOpened():
            raise RunError(f"cannot read video {path}: OpenCV cannot open it (not a video, or an unsupported codec)")
        self.fps, self.size = _geometry(self.cap)
        self.read = self.dropped = 0
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.expected = int(count) if count and math.isfinite(count) and count > 0 else None  # the container's count
        self.bad = 0  # frames the container lists that could not be decoded (damaged, or cut off at the end)

    def frames(self, decode: Callable[[int], bool] = lambda i: True) -> Iterator[Frame]:
        """The file's frames; a frame that cannot be decoded is skipped and counted (`bad`), and reading goes on
        with the next frame the container lists. Raises RunError when no frame at all can be read."""
        index = misses = 0
        while True:
            if decode(index):
                ok, image = self.cap.read()
            else:
                ok, image = self.cap.grab(), None
            if not ok:
                if self.expected is None or index >= self.expected:
                    break
                if misses >= MAX_MISSES:  # the file is cut off here: count what it lacks and stop trying
                    self.bad += self.expected - index
                    break
                self.bad, misses, index = self.bad + 1, misses + 1, index + 1
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, index)  # past the damaged frame
                continue
            misses = 0
            self.read += 1
            yield Frame(index, index / self.fps, image, time.perf_counter())
            index += 1
        if self.read == 0:
            raise RunError(f"cannot read video {self.name}: no frame could be decoded")

    def close(self) -> None:
        self.cap.release()


class LiveSource:
    """A camera or stream: a capture thread reads as fast as the source gives frames and keeps only the newest;
    `frames()` yields each newest frame once. Frames replaced before they were taken are counted as dropped. A
    stalled source is reopened `reopen` times (waiting a little longer each time), then `frames()` raises."""

    live = True

    def __init__(self, spec: str, opener: Callable[[str], object] = open_capture, reopen: int = 3,
                 backoff_s: float = 0.5) -> None:
        self.name, self.opener, self.reopen, self.backoff_s = spec, opener, reopen, backoff_s
        self.cap = opener(spec)
        if not self.cap.isOpened():
            raise RunError(f"cannot open {describe(spec)}: no such device, or the stream does not answer")
        self.fps, self.size = _geometry(self.cap)
        self.read = self.dropped = 0
        self._latest: Frame | None = None
        self._taken = True
        self._error: str | None = None
        self._stop = threading.Event()
        self._new = threading.Condition()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._capture, name="cnnmode-capture", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        attempts = 0
        while not self._stop.is_set():
            ok, image = self.cap.read()
            if not ok:
                if attempts >= self.reopen:
                    self._fail(f"{describe(self.name)} stalled: no frame after {self.reopen} reopen attempts")
                    return
                attempts += 1
                self.cap.release()
                self._stop.wait(self.backoff_s * attempts)
                self.cap = self.opener(self.name)
                continue
            attempts = 0
            now = time.perf_counter()
            with self._new:
                if not self._taken:
                    self.dropped += 1
                self._latest = Frame(self.read, now - self._start, image, now)
                self._taken = False
                self.read += 1
                self._new.notify_all()

    def _fail(self, message: str) -> None:
        with self._new:
            self._error = message
            self._new.notify_all()

    def frames(self, decode: Callable[[int], bool] = lambda i: True) -> Iterator[Frame]:
        """The newest frame each time the consumer asks (live frames are always decoded)."""
        while not self._stop.is_set():
            with self._new:
                while self._taken and self._error is None and not self._stop.is_set():
                    self._new.wait(0.5)
                if not self._taken:
                    frame, self._taken = self._latest, True
                elif self._error is not None:
                    raise RunError(self._error)
                else:
                    return
            yield frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.cap.release()


def open_source(spec: str) -> FileSource | LiveSource:
    """A camera index (`0`), a stream URL (`rtsp://`, `http://`, ...) or a video file."""
    if spec.isdigit() or "://" in spec:
        return LiveSource(spec)
    return FileSource(spec)
