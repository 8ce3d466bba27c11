"""Sources: a file gives every frame; a live source keeps only the newest (drops, not lag), reopens a stalled
stream a few times, then stops with one line."""
import time

import cv2
import numpy as np
import pytest

from cnnmode.deploy.video import FileSource, LiveSource, open_source
from cnnmode.errors import RunError, UsageError


class FakeCamera:
    """A cv2.VideoCapture stand-in producing numbered frames every `period` seconds, failing after `frames`."""

    def __init__(self, period: float = 0.001, frames: int | None = None) -> None:
        self.period, self.left, self.n = period, frames, 0

    def isOpened(self) -> bool:
        return True

    def get(self, prop) -> float:
        return {cv2.CAP_PROP_FPS: 0.0, cv2.CAP_PROP_FRAME_WIDTH: 64, cv2.CAP_PROP_FRAME_HEIGHT: 48}.get(prop, 0.0)

    def read(self):
        time.sleep(self.period)
        if self.left is not None:
            if self.left <= 0:
                return False, None
            self.left -= 1
        self.n += 1
        return True, np.full((48, 64, 3), self.n % 256, np.uint8)

    def release(self) -> None:
        pass


def test_a_file_gives_every_frame_in_order(video):
    source = FileSource(str(video))
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(30)) and source.fps == 10 and source.size == (96, 96)
    assert frames[15].time_s == pytest.approx(1.5) and source.dropped == 0


def test_a_live_source_drops_frames_instead_of_lagging():
    source = LiveSource("fake", opener=lambda spec: FakeCamera(period=0.001))
    assert source.fps == 30.0  # a camera reporting 0 FPS is taken as 30
    lags, indices = [], []
    for frame in source.frames():
        time.sleep(0.02)  # a classifier far slower than the camera
        lags.append(time.perf_counter() - frame.read_at)
        indices.append(frame.index)
        if len(lags) == 40:
            break
    source.close()
    assert source.dropped > 100 and indices == sorted(indices) and len(set(indices)) == 40
    first, last = np.median(lags[:10]), np.median(lags[-10:])
    assert last < 0.1 and last < first + 0.02  # the lag does not grow


def test_a_stalled_stream_is_reopened_then_stops_with_one_line():
    opened = []

    def opener(spec):
        opened.append(spec)
        return FakeCamera(frames=5 if len(opened) == 1 else 0)

    source = LiveSource("rtsp://camera/stream", opener=opener, reopen=3, backoff_s=0.01)
    with pytest.raises(RunError, match="stalled: no frame after 3 reopen attempts"):
        for _ in source.frames():
            pass
    source.close()
    assert len(opened) == 4


def test_bad_sources_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="no such video file"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(RunError, match="cannot read video"):
        list(open_source(str(tmp_path / "notes.avi")).frames())
    with pytest.raises(RunError, match="cannot open camera 9"):
        open_source("9")
    with pytest.raises(RunError, match="cannot open http://127.0.0.1:9/"):
        open_source("http://127.0.0.1:9/")
