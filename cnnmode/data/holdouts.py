"""Stratified, seeded index selection: validation/test hold-outs and subsets. Label sets stratify by each
image's rarest label (`labels.strata`)."""
from __future__ import annotations

import torch

from cnnmode.data.labels import strata
from cnnmode.errors import UsageError


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held) with `fraction` of every class held out (at least one per class)."""
    gen = torch.Generator().manual_seed(seed)
    labels = strata(labels)
    kept, held = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:n])
        kept.append(idx[n:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def stratified_subset(labels: torch.Tensor, amount: float, seed: int) -> torch.Tensor:
    """Indices of `amount` samples (>= 1: a count, < 1: a fraction), spread evenly over classes."""
    if amount <= 0:
        return torch.arange(len(labels))
    fraction = amount if amount < 1 else min(1.0, amount / max(len(labels), 1))
    if fraction >= 1:
        return torch.arange(len(labels))
    _, held = stratified_holdout(labels, fraction, seed)
    return held


def stratified_fold(labels: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held): `held` is fold `fold` of `folds` stratified, seeded folds."""
    from sklearn.model_selection import StratifiedKFold

    labels = strata(labels)
    counts = torch.bincount(labels)
    if int(counts[counts > 0].min()) < folds:
        raise UsageError(f"data.folds={folds} needs at least {folds} training images of every class "
                         f"(the smallest class has {int(counts[counts > 0].min())})")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    kept, held = list(splitter.split(labels.numpy().reshape(-1, 1), labels.numpy()))[fold]
    return torch.as_tensor(kept), torch.as_tensor(held)
