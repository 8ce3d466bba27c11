"""Labels of both tasks. Single-label data has one class index per image (a 1-D int64 tensor); multi-label data
has a set of classes per image, held as a multi-hot uint8 tensor (images x classes; 1 = the label is present).
Soft targets (mixup/cutmix of either task) are float: an integer dtype tells multi-hot rows apart from them."""
from __future__ import annotations

import torch

SEPARATOR = ";"  # between the class names of one CSV cell


def split_cell(cell: str) -> list[str]:
    """The class names of a multi-label CSV cell (`a;b`; empty = no label), stripped, in order, without repeats."""
    names = [n.strip() for n in cell.split(SEPARATOR)]
    return list(dict.fromkeys(n for n in names if n))


def multi_hot(sets: list[list[int]] | list[tuple[int, ...]], num_classes: int) -> torch.Tensor:
    """(N, num_classes) uint8 rows with a 1 at each listed class."""
    out = torch.zeros(len(sets), num_classes, dtype=torch.uint8)
    for row, ids in enumerate(sets):
        out[row, list(ids)] = 1
    return out


def label_tensor(values: list, num_classes: int, multilabel: bool) -> torch.Tensor:
    """Labels as read from a source: class indices → int64; class-index sets → multi-hot uint8."""
    if multilabel:
        return multi_hot(values, num_classes)
    return torch.tensor(values, dtype=torch.long)


def counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Images per class (multi-label: images carrying each label)."""
    if labels.ndim == 2:
        return labels.long().sum(0)
    return torch.bincount(labels, minlength=num_classes)


def strata(labels: torch.Tensor) -> torch.Tensor:
    """One class index per image to stratify hold-outs and folds by: the label itself; for a label set its rarest
    label (so rare labels reach every split), and `classes` (one past the last) for an image with no label."""
    if labels.ndim == 1:
        return labels
    frequency = labels.long().sum(0).double()
    rarity = torch.where(labels.bool(), frequency, torch.inf)  # absent labels never count as the rarest
    key = rarity.argmin(1)
    return torch.where(labels.bool().any(1), key, torch.full_like(key, labels.shape[1]))


def sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-image weights that draw each class equally often: 1 / the class's count; for a label set, 1 / the
    count of its rarest label (images with no label weigh as a class of their own)."""
    key = strata(labels)
    return 1 / torch.bincount(key).double()[key]
