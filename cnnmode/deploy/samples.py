"""Real images for a model: stratified samples of a split, for agreement and accuracy checks (the test split)
and for int8 calibration and export verification (the validation split, never the test split)."""
from __future__ import annotations

import torch

from cnnmode.artifact import Artifact
from cnnmode.data.for_model import data_for_model
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
