"""Where annotated frames and labels go: a video file, a CSV of labels, an on-screen window. Each output is
checked before capture starts and finished properly (a playable file, a complete CSV) even after Ctrl-C."""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from cnnmode.deploy.video.options import CODECS
from cnnmode.errors import RunError

class VideoOutput:
    """The annotated video: MJPG in .avi, mp4v in .mp4, at the source's FPS; written to a temporary name and moved
    into place on close, so an interrupted run still leaves a complete, playable file."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*CODECS[path.suffix.lower()]), fps, size)
        if not self.writer.isOpened():
            raise RunError(f"cannot write {path}: OpenCV has no {CODECS[path.suffix.lower()]} encoder here")
        self.size, self.frames = size, 0

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:  # a stream that changes resolution mid-way
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class CsvOutput:
    """One row per classified frame: frame index, timestamp, (with --reject: unknown 0/1 and the ood score,) then
    top-k class/probability pairs."""

    def __init__(self, path: Path, k: int, judged: bool = False) -> None:
        self.path, self.tmp, self.judged = path, path.with_name(f".{path.name}.partial"), judged
        self.file = self.tmp.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["frame", "time_s"] + (["unknown", "ood_score"] if judged else [])
                             + [c for i in range(k) for c in (f"top{i + 1}", f"prob{i + 1}")])
        self.rows = 0

    def write(self, index: int, time_s: float, top: list[tuple[str, float]], ood: float | None = None,
              unknown: bool = False) -> None:
        verdict = [int(unknown), f"{ood:.4f}"] if self.judged else []
        self.writer.writerow([index, f"{time_s:.3f}"] + verdict + [x for c, p in top for x in (c, f"{p:.6f}")])
        self.rows += 1

    def close(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)


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
