from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_image


def write_video(path: Path, seconds: int = 3, fps: int = 10, size: int = 96, frames: int | None = None) -> Path:
    """Each second shows one class image (32 px, upscaled), cycling through the 3 classes; MJPG .avi."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    rng = np.random.default_rng(0)
    total = frames if frames is not None else seconds * fps
    images = [cv2.resize(cv2.cvtColor(np.asarray(make_image(c, rng)), cv2.COLOR_RGB2BGR), (size, size),
                         interpolation=cv2.INTER_NEAREST) for c in range(3)]
    for i in range(total):
        writer.write(images[(i // fps) % 3])
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")
