"""The training loss: `Criterion` owns every loss setting (cross-entropy or focal, label smoothing, class weights
and when they start, knowledge distillation; for label sets, binary cross-entropy or the asymmetric loss with
positive weights) and is called as `criterion(logits, targets, inputs)`. Targets are hard labels, multi-hot label
sets, or soft ones (mixup/cutmix)."""
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


def multilabel_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "bce", weight: torch.Tensor | None = None,
                    pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0, gamma_neg: float = 4.0,
                    clip: float = 0.05) -> torch.Tensor:
    """Per-label sigmoid losses summed over the labels and averaged over the images (the scale of cross-entropy,
    so one learning rate suits both tasks). `bce`: binary cross-entropy with optional per-label `weight` and
    `pos_weight`; `asl`: the asymmetric loss (Ridnik et al., 2021) with gamma+ = 0, gamma- = `gamma_neg` and the
    absent labels' probability shifted down by `clip`. Smoothing moves targets to ls/2 and 1 - ls/2."""
    logits, target = logits.float(), y.float()
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / 2
    if kind == "bce":
        per_label = F.binary_cross_entropy_with_logits(logits, target, weight=weight, pos_weight=pos_weight,
                                                       reduction="none")
    else:
        p = logits.sigmoid()
        p_neg = (p - clip).clamp(min=0) if clip > 0 else p
        present = target * F.logsigmoid(logits) * (pos_weight if pos_weight is not None else 1)
        absent = (1 - target) * p_neg.pow(gamma_neg) * torch.log((1 - p_neg).clamp(min=1e-8))
        per_label = -(present + absent) * (weight if weight is not None else 1)
    return per_label.sum(1).mean()


def multilabel_weights(spec: str, positives: list[int], images: int, classes: list[str],
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(per-label loss weights, positive weights) for label sets: `auto` weighs each label's present cases by
    absent / present (BCEWithLogitsLoss's `pos_weight`); `effective` and a weights file weigh each label's whole
    term as `class_weights` does."""
    if spec == "auto":
        pos = torch.tensor(positives, dtype=torch.float32).clamp(min=1)
        return None, (images - pos).clamp(min=1) / pos
    return class_weights(spec, positives, classes), None


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the outputs softened at `temperature`, scaled by T^2 (Hinton et al., 2015)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                  reduction="batchmean", log_target=True)
    return kl * t * t


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices from soft targets; class indices and multi-hot label sets (integer) as they are."""
    return y.argmax(1) if y.ndim == 2 and y.dtype.is_floating_point else y


SINGLE_LOSSES, MULTILABEL_LOSSES = ("ce", "focal"), ("bce", "asl")


def loss_kind(name: str, multilabel: bool) -> str:
    """train.loss resolved for the task (`auto`: ce, or bce for label sets); a loss of the other task is refused."""
    if name == "auto":
        return "bce" if multilabel else "ce"
    allowed = MULTILABEL_LOSSES if multilabel else SINGLE_LOSSES
    if name not in allowed:
        why = "a softmax loss (one class per image)" if multilabel else "a sigmoid loss for label sets"
        task = "multi-label" if multilabel else "single-label"
        raise UsageError(f"train.loss={name} is {why} and this data is {task}; choose one of: auto, "
                         f"{', '.join(allowed)}")
    return name


@dataclass
class Criterion:
    """The training loss and every setting it has. `weights` (per class, on the training device) apply from the
    epoch after `weights_from` (deferred re-weighting: `set_epoch` switches them on); with a `teacher`, the loss
    is `alpha` x the distillation loss at `temperature` + (1 - `alpha`) x the classification loss."""
    kind: str = "ce"  # or "focal"; for label sets "bce" or "asl"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    weights: torch.Tensor | None = None
    weights_from: int = 0
    teacher: nn.Module | None = None
    temperature: float = 4.0
    alpha: float = 0.7
    multilabel: bool = False
    pos_weight: torch.Tensor | None = None  # label sets: weight of each label's present cases
    asl_gamma_neg: float = 4.0
    asl_clip: float = 0.05
    active_weights: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.set_epoch(1)

    @classmethod
    def from_config(cls, cfg: Config, *, weights: torch.Tensor | None = None, teacher: nn.Module | None = None,
                    device: torch.device | None = None, multilabel: bool = False,
                    pos_weight: torch.Tensor | None = None) -> "Criterion":
        """The criterion `cfg`'s train keys describe (`weights`: from `class_weights`; `teacher`: a model in eval
        mode, moved to `device` with the weights; `multilabel`: sigmoid outputs for label sets)."""
        t = cfg.train
        return cls(kind=loss_kind(t.loss, multilabel), label_smoothing=t.label_smoothing, focal_gamma=t.focal_gamma,
                   weights=None if weights is None else weights.to(device),
                   weights_from=round(t.reweight_from * t.epochs),
                   teacher=None if teacher is None else teacher.to(device).eval(),
                   temperature=t.distill_temperature, alpha=t.distill_alpha, multilabel=multilabel,
                   pos_weight=None if pos_weight is None else pos_weight.to(device),
                   asl_gamma_neg=t.asl_gamma_neg, asl_clip=t.asl_clip)

    def set_epoch(self, epoch: int) -> None:
        """Use the class weights from epoch `weights_from + 1` (1-based) on."""
        self.active_weights = self.weights if epoch > self.weights_from else None

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many images the logits get right: the top class (single-label), or every label's presence at
        probability 0.5 (label sets: the exact set)."""
        if self.multilabel:
            return ((logits > 0) == (targets > 0.5)).all(1).sum()
        return (logits.argmax(1) == hard_labels(targets)).sum()

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        if self.multilabel:
            loss = multilabel_loss(logits, targets, self.kind, self.active_weights, self.pos_weight,
                                   self.label_smoothing, self.asl_gamma_neg, self.asl_clip)
        else:
            loss = classification_loss(logits, targets, self.kind, self.focal_gamma, self.active_weights,
                                       self.label_smoothing)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return self.alpha * distillation_loss(logits, teacher_logits, self.temperature) + (1 - self.alpha) * loss
