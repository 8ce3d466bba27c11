"""Where annotated frames and labels go: a video file, a CSV of labels, an on-screen window. Each output is
checked before capture starts and finished properly (a playable file, a complete CSV) even after Ctrl-C."""
from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from cnnmode.deploy.video.options import CODECS
from cnnmode.errors import RunError

class VideoOutput:
    """The annotated video: MJPG in .avi, mp4v in .mp4, at the source's FPS; written to a temporary name and moved
    into place on close, so an interrupted run still leaves a complete, playable file. OpenCV's writer reports no
    failed write, so the free space is watched as frames go out and the finished file is read back: a full disk
    stops the run with one line and never leaves a short file under the output's name."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*CODECS[path.suffix.lower()]), fps, size)
        if not self.writer.isOpened():
            raise RunError(f"cannot write {path}: OpenCV has no {CODECS[path.suffix.lower()]} encoder here")
        self.size, self.frames, self.failed = size, 0, False

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:  # a stream that changes resolution mid-way
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1
        per_frame = max(1, self.tmp.stat().st_size // self.frames) if self.tmp.exists() else 1
        if shutil.disk_usage(self.tmp.parent).free < per_frame:
            self._fail(f"no space left on {self.tmp.parent} after {self.frames} frames")

    def close(self) -> None:
        self.writer.release()
        if self.failed:
            return
        if not self.frames:
            self.tmp.unlink(missing_ok=True)
            return
        held = readable_frames(self.tmp)
        if held < self.frames:  # one more is possible: Ctrl-C between a write and its count
            full = shutil.disk_usage(self.tmp.parent).free == 0
            self._fail(f"it holds {held} of the {self.frames} frames written"
                       + (f" (no space left on {self.tmp.parent})" if full else ""))
        os.replace(self.tmp, self.path)

    def _fail(self, why: str) -> None:
        self.failed = True
        self.writer.release()
        raise RunError(f"writing {self.path} failed: {why}; the incomplete file is kept as {self.tmp}")


def readable_frames(path: Path) -> int:
    """How many frames a finished video file gives back: its frame count when it opens and its last frame
    decodes, else 0 (a file cut short has no index to count from)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, count - 1))
        return count if cap.read()[0] else 0
    finally:
        cap.release()


class CsvOutput:
    """One row per classified frame: frame index, timestamp, (with --reject: unknown 0/1 and the ood score,) then
    top-k class/probability pairs. A failed write (a full disk) is one line naming the file."""

    def __init__(self, path: Path, k: int, judged: bool = False) -> None:
        self.path, self.tmp, self.judged = path, path.with_name(f".{path.name}.partial"), judged
        self.file = self.tmp.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.rows, self.failed = 0, False
        self._guarded(self.writer.writerow, ["frame", "time_s"] + (["unknown", "ood_score"] if judged else [])
                      + [c for i in range(k) for c in (f"top{i + 1}", f"prob{i + 1}")])

    def write(self, index: int, time_s: float, top: list[tuple[str, float]], ood: float | None = None,
              unknown: bool = False) -> None:
        verdict = [int(unknown), f"{ood:.4f}"] if self.judged else []
        self._guarded(self.writer.writerow, [index, f"{time_s:.3f}"] + verdict
                      + [x for c, p in top for x in (c, f"{p:.6f}")])
        self.rows += 1

    def close(self) -> None:
        if self.failed:
            return
        self._guarded(self.file.close)
        os.replace(self.tmp, self.path)

    def _guarded(self, write, *args) -> None:
        try:
            write(*args)
        except OSError as e:
            self.failed = True
            try:
                self.file.close()
            except OSError:
                pass
            raise RunError(f"writing {self.path} failed: {e.strerror or e}; the incomplete file is kept as "
                           f"{self.tmp}") from None


def window_problem() -> str | None:
    """Why a window cannot be opened here (no display, or OpenCV built without GUI support), or None."""
    # Windows and macOS always have a desktop; elsewhere a window needs an X11 or Wayland display
    if sys.platform not in ("win32", "darwin") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display"
    gui = next((line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")), "")
    if "NONE" in gui.upper():
        return ("OpenCV was built without GUI support (opencv-python-headless); for a window: "
                "pip uninstall -y opencv-python-headless && pip install opencv-python")
    try:
        cv2.namedWindow("cnnmode video", cv2.WINDOW_NORMAL)
    except cv2.error as e:
        return f"OpenCV cannot open a window: {e}"
    return None


class Window:
    """The on-screen window; `show` returns False once the user pressed q or Esc."""

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow("cnnmode video", image)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyAllWindows()
