"""What is drawn on each frame, as in the seed's webcam classifier: the top-1 class and its confidence (green at
or above the threshold, yellow below) or a multi-label model's labels present, optional top-k bars, a smoothed FPS
counter and the frame's latency."""
from __future__ import annotations

import cv2
import numpy as np

GREEN = (60, 200, 60)  # BGR
YELLOW = (0, 215, 255)
WHITE = (255, 255, 255)
RED = (60, 60, 230)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_colour(confidence: float, threshold: float) -> tuple[int, int, int]:
    """Green when the model is confident (>= threshold), yellow below."""
    return GREEN if confidence >= threshold else YELLOW


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour, thickness: int) -> None:
    cv2.putText(image, text, origin, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)  # dark outline
    cv2.putText(image, text, origin, FONT, scale, colour, thickness, cv2.LINE_AA)


def draw(image: np.ndarray, top: list[tuple[str, float]], threshold: float, bars: bool = False,
         fps: float | None = None, latency_ms: float | None = None,
         labels: list[tuple[str, float]] | None = None, unknown_score: float | None = None) -> np.ndarray:
    """Draw on `image` (BGR, in place, original size) and return it. With `labels` (a multi-label model's labels
    present), one line per label present, or "no label"; with `unknown_score`, "unknown" in red instead of the
    label (the frame is unlike the training classes)."""
    h, w = image.shape[:2]
    scale = max(0.4, min(w, h) / 480)
    thick = max(1, round(2 * scale))
    line = int(34 * scale)
    if labels is not None:
        for row, (name, p) in enumerate(labels or [("no label", 0.0)]):
            text = f"{name} {100 * p:.1f}%" if labels else name
            _text(image, text, (int(10 * scale), line + int(row * 30 * scale)), scale, GREEN if labels else YELLOW,
                  thick)
        line += int((max(len(labels), 1) - 1) * 30 * scale)
    elif unknown_score is not None:
        _text(image, f"unknown (ood {unknown_score:.2f})", (int(10 * scale), line), scale, RED, thick)
    else:
        label, confidence = top[0]
        _text(image, f"{label} {100 * confidence:.1f}%", (int(10 * scale), line), scale,
              label_colour(confidence, threshold), thick)
    if bars:
        for row, (name, p) in enumerate(top, start=1):
            y = line + int(row * 26 * scale)
            x0, length = int(10 * scale), int(160 * scale)
            cv2.rectangle(image, (x0, y - int(14 * scale)), (x0 + int(length * p), y), WHITE, -1)
            cv2.rectangle(image, (x0, y - int(14 * scale)), (x0 + length, y), WHITE, 1)
            _text(image, f"{name} {100 * p:.0f}%", (x0 + length + int(8 * scale), y), 0.6 * scale, WHITE,
                  max(1, thick // 2))
    status = " ".join(s for s in (f"{fps:.1f} FPS" if fps else "", f"{latency_ms:.0f} ms" if latency_ms is not None
                                  else "") if s)
    if status:
        size = cv2.getTextSize(status, FONT, 0.6 * scale, max(1, thick // 2))[0]
        _text(image, status, (w - size[0] - int(10 * scale), h - int(10 * scale)), 0.6 * scale, WHITE,
              max(1, thick // 2))
    return image
