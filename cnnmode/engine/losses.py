"""The training loss: `Criterion` owns every loss setting (cross-entropy or focal, label smoothing, class weights
and when they start, knowledge distillation) and is called as `criterion(logits, targets, inputs)`. Targets are
hard labels or soft ones (mixup/cutmix)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnmode.config import Config, read_yaml
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


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the outputs softened at `temperature`, scaled by T^2 (Hinton et al., 2015)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                  reduction="batchmean", log_target=True)
    return kl * t * t


@dataclass
class Criterion:
    """The training loss and every setting it has. `weights` (per class, on the training device) apply from the
    epoch after `weights_from` (deferred re-weighting: `set_epoch` switches them on); with a `teacher`, the loss
    is `alpha` x the distillation loss at `temperature` + (1 - `alpha`) x the classification loss."""
    kind: str = "ce"  # or "focal"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    weights: torch.Tensor | None = None
    weights_from: int = 0
    teacher: nn.Module | None = None
    temperature: float = 4.0
    alpha: float = 0.7
    active_weights: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.set_epoch(1)

    @classmethod
    def from_config(cls, cfg: Config, *, weights: torch.Tensor | None = None, teacher: nn.Module | None = None,
                    device: torch.device | None = None) -> "Criterion":
        """The criterion `cfg`'s train keys describe (`weights`: from `class_weights`; `teacher`: a model in eval
        mode, moved to `device` with the weights)."""
        t = cfg.train
        return cls(kind=t.loss, label_smoothing=t.label_smoothing, focal_gamma=t.focal_gamma,
                   weights=None if weights is None else weights.to(device),
                   weights_from=round(t.reweight_from * t.epochs),
                   teacher=None if teacher is None else teacher.to(device).eval(),
                   temperature=t.distill_temperature, alpha=t.distill_alpha)

    def set_epoch(self, epoch: int) -> None:
        """Use the class weights from epoch `weights_from + 1` (1-based) on."""
        self.active_weights = self.weights if epoch > self.weights_from else None

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        loss = classification_loss(logits, targets, self.kind, self.focal_gamma, self.active_weights,
                                   self.label_smoothing)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return self.alpha * distillation_loss(logits, teacher_logits, self.temperature) + (1 - self.alpha) * loss
