"""`cnnmode video`: a source → classify_frames → overlay → video file / CSV / window / MJPEG, with a summary."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

from cnnmode.deploy.runtime import open_runner
from cnnmode.deploy.video.classify import classify_frames
from cnnmode.deploy.video.mjpeg import MjpegServer
from cnnmode.deploy.video.options import VideoOptions
from cnnmode.deploy.video.outputs import CsvOutput, VideoOutput, Window, window_problem
from cnnmode.deploy.video.overlay import draw
from cnnmode.deploy.video.sources import open_source
from cnnmode.rundir import resolve_target


CALIB_IMAGES = 128  # int8 calibration images: enough for ResNet-style models, and a file starts in seconds


class _Fps:
    """Frames per second over the last two seconds (batches of frames arrive together, so a per-frame rate jumps)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s, self.times = window_s, deque()

    def tick(self) -> float:
        now = time.perf_counter()
        self.times.append(now)
        while now - self.times[0] > self.window_s:
            self.times.popleft()
        span = now - self.times[0]
        return (len(self.times) - 1) / span if span > 0.2 else 0.0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what `docker stop` and `timeout` send) ends the run as Ctrl-C does: outputs finished and kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def close_all(*parts) -> None:
    """Close every part that exists, even when one fails to; the first failure is raised after."""
    failure = None
    for part in parts:
        try:
            if part is not None:
                part.close()
        except Exception as e:  # noqa: BLE001  (re-raised below)
            failure = failure or e
    if failure is not None:
        raise failure


def run_video(target: str, options: VideoOptions, say: Callable[[str], None] = print) -> dict:
    """Classify a video source end to end; returns the summary (also for Ctrl-C, with `interrupted`)."""
    options.check()
    runner, _ = open_runner(resolve_target(target), options.backend, options.device, options.calib_data,
                            CALIB_IMAGES)
    reject_at = runner.reject_threshold(options.reject, options.coverage)
    say(runner.describe() + (f"; {runner.reject_note}, rejecting above {reject_at:.2f}" if reject_at is not None
                             else ""))
    source = open_source(options.source)
    window = None
    if options.show:
        problem = window_problem()
        if problem:
            say(f"--show: {problem}; running headless")
        else:
            window = Window()
    drawing = bool(options.output or window or options.http is not None)
    video = VideoOutput(Path(options.output), source.fps, source.size) if options.output else None  # checked above
    table = CsvOutput(Path(options.csv), min(options.topk, len(runner.classes)), reject_at is not None) \
        if options.csv else None
    stream = MjpegServer(options.http, options.host) if options.http is not None else None
    if stream:
        say(f"watch it at {stream.url}")
    batch = 1 if source.live else options.batch_size  # live: the newest frame at once, never a queue of them
    runner.warm(batch)  # compiling backends compile here, not on the first frames
    frames = source.frames(decode=lambda i: drawing or i % options.stride == 0)
    summary = {"source": options.source, "live": source.live, "fps_source": source.fps, "frames": 0,
               "classified": 0, "interrupted": False}
    fps, latencies, start, stack = _Fps(), [], time.perf_counter(), contextlib.ExitStack()
    try:
        stack.enter_context(_sigterm_as_interrupt())
        for result in classify_frames(frames, runner, batch_size=batch, stride=options.stride, topk=options.topk,
                                      reject_at=reject_at):
            summary["frames"] += 1
            rate = fps.tick()
            if result.classified:
                summary["classified"] += 1
                latencies.append(result.latency_ms)
                if table:
                    table.write(result.frame.index, result.frame.time_s, result.top, result.ood_score, result.unknown)
            if drawing:
                image = draw(result.frame.image, result.top, options.threshold, options.topk > 1, rate,
                             result.latency_ms, result.labels, result.ood_score if result.unknown else None)
                if video:
                    video.write(image)
                if stream:
                    stream.publish(image)
                if window and not window.show(image):
                    break
            if options.max_frames and summary["frames"] >= options.max_frames:
                break
    except KeyboardInterrupt:
        summary["interrupted"] = True
    finally:
        stack.close()
        close_all(source, video, table, stream, window)
    elapsed = time.perf_counter() - start
    summary |= {"read": source.read, "dropped": source.dropped, "bad": getattr(source, "bad", 0),
                "expected": getattr(source, "expected", None), "seconds": round(elapsed, 2),
                "fps": round(summary["frames"] / elapsed, 2) if elapsed > 0 else 0.0,
                "latency_ms_p50": round(sorted(latencies)[len(latencies) // 2], 1) if latencies else None,
                "output": options.output, "csv": options.csv}
    return summary
