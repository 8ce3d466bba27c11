"""Real images for a model: stratified samples of a split, for agreement and accuracy checks (the test split)
and for int8 calibration and export verification (the validation split, never the test split)."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cnnmode.artifact import Artifact
from cnnmode.data.trained_model_data import data_for_model
from cnnmode.data.source_layout import content_key
from cnnmode.rundir import Target


def sample_images(target: Target, art: Artifact, source: str | None, n: int = 512, split: str = "val"
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to n normalised, unaugmented (images, labels), a stratified sample of a split of `source` or of a
    run folder's own data (so every class is represented); None when there is neither."""
    if source is None and target.run is None:
        return None
    _, bundle = data_for_model(target, art.preprocess, art.classes, source, "reading images for", subset=n,
                               need_val=split == "val")
    xs, ys, count = [], [], 0
    for x, y in (bundle.test if split == "test" else bundle.val):
        xs.append(x.float())
        ys.append(y)
        count += len(x)
        if count >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def calibration_images(target: Target, art: Artifact, source: str | None, n: int = 512) -> torch.Tensor | None:
    """Real images for calibration and verification (the validation split, never the test split), or None."""
    found = sample_images(target, art, source, n, "val")
    return found[0] if found else None


@dataclass
class Calibration:
    """Real images to calibrate int8 on, read only when a backend needs them (a cached int8 model does not), and a
    key naming what they are (part of a cached model's key)."""
    key: str
    read: Callable[[], torch.Tensor]

    @functools.cached_property
    def images(self) -> torch.Tensor:
        """The images (normalised, NCHW), read on first use."""
        return self.read()

    @classmethod
    def of(cls, images: torch.Tensor) -> "Calibration":
        """Images already in memory, keyed by their content."""
        key = hashlib.sha256(images.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:24]
        return cls(f"tensor:{key}", lambda: images)


def calibration_for(target: Target, art: Artifact, source: str | None, n: int = 512) -> Calibration | None:
    """`n` images of `source` (or of the run folder's own validation split) to calibrate on, read lazily; None when
    there is neither."""
    if source is None and target.run is None:
        return None
    if source is None:
        what = f"run:{target.run.path.resolve()}"  # its validation split
    else:  # a folder or archive by its content; a named dataset by its name
        what = f"data:{content_key(Path(source))}" if Path(source).exists() else f"data:{source}"
    return Calibration(f"{what}:{n}", lambda: calibration_images(target, art, source, n))
