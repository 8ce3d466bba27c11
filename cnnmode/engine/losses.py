"""Training losses for imbalanced data: per-class weights (inverse frequency, effective number, or a file) and
focal loss. Both take hard labels or soft ones (mixup/cutmix targets)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnmode.config import read_yaml
from cnnmode.errors import UsageError

EFFECTIVE_BETA = 0.999


def class_weights(spec: str, counts: list[int], classes: list[str]) -> torch.Tensor | None:
    """Loss weights per class, scaled to a mean of 1 over the classes: None for `none`; `auto` 1/count; `effective`
    (1 - beta) / (1 - beta^count) (Cui et al., 2019); else a YAML/JSON file mapping every class name to a weight."""
    if spec == "none":
        return None
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
    if spec == "auto":
        w = 1 / n
    elif spec == "effective":
        w = (1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** n)
    else:
        given = read_yaml(spec)
        missing = [c for c in classes if c not in given]
        if missing:
            raise UsageError(f"train.class_weights file {spec} has no weight for class(es) {', '.join(missing)}; "
                             f"give one for each of: {', '.join(classes)}")
        try:
            w = torch.tensor([float(given[c]) for c in classes], dtype=torch.float64)
        except (TypeError, ValueError):
            raise UsageError(f"train.class_weights file {spec}: every weight must be a number") from None
        if (w <= 0).any():
            raise UsageError(f"train.class_weights file {spec}: weights must be > 0")
    return (w / w.mean()).float()


def _targets(y: torch.Tensor, num_classes: int, label_smoothing: float) -> torch.Tensor:
    target = y.float() if y.ndim == 2 else F.one_hot(y, num_classes).float()
    return target * (1 - label_smoothing) + label_smoothing / num_classes if label_smoothing else target


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float, weight: torch.Tensor | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over the batch of -sum_c w_c t_c (1 - p_c)^gamma log p_c (Lin et al., 2017), t the (smoothed or
    mixed) target; with hard labels and weights, normalised by the weights of the labels, as cross-entropy is."""
    logp = F.log_softmax(logits.float(), 1)
    target = _targets(y, logits.shape[1], label_smoothing)
    per_class = -target * (1 - logp.exp()).pow(gamma) * logp
    if weight is None:
        return per_class.sum(1).mean()
    per_class = per_class * weight
    return per_class.sum() / weight[y].sum() if y.ndim == 1 else per_class.sum(1).mean()


def classification_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "ce", gamma: float = 2.0,
                        weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy or focal loss, each with optional class weights and label smoothing."""
    if kind == "focal":
        return focal_loss(logits, y, gamma, weight, label_smoothing)
    return F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=label_smoothing)
