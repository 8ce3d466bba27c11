"""train_one_epoch() and scoring a loader (predict_logits, score): plain functions, no host sync per step."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnmode.engine.device import Precision
from cnnmode.engine.losses import Criterion, hard_labels
from cnnmode.errors import RunError


@dataclass
class StepSetup:
    """What one optimizer step needs besides the batch and the loss: the optimizer, the GradScaler, the precision
    and device the forward runs in, gradient accumulation and clipping."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: Precision
    device: torch.device
    accum_steps: int = 1
    grad_clip: float = 0.0


@dataclass
class EpochTally:
    """Running sums of one training epoch; carried in a mid-epoch checkpoint so a resumed epoch reports the same
    figures as an uninterrupted one."""
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    time_s: float = 0.0


StepHook = Callable[[int, Callable[[], EpochTally]], None]


def train_one_epoch(model: nn.Module, loader, criterion: Criterion, step: StepSetup, *,
                    on_progress: Callable[[int, dict], None] | None = None, every_s: float = 0.5,
                    on_step: StepHook | None = None, carried: EpochTally | None = None,
                    reduce: Callable[[list[float]], list[float]] | None = None) -> dict:
    """One pass over `loader` (from its `resume_at`, for a resumed epoch), minimising `criterion` with the
    optimizer step `step`; returns loss, accuracy, images/s.

    `on_step(batches_done, tally)` runs after every optimizer step (per-step schedules and weight averages belong
    there; `tally()` gives the sums so far, at the cost of a host sync); `carried` holds the sums of the part of
    the epoch done before a resume; `reduce` sums the final figures across data-parallel ranks. The loss is
    checked for NaN/inf periodically (only at the end under data parallelism, where every rank must agree)."""
    model.train()
    carried = carried or EpochTally()
    loss_sum = torch.full((), carried.loss_sum, device=step.device)
    correct = torch.full((), carried.correct, device=step.device)
    seen, start, last_report = carried.seen, time.perf_counter() - carried.time_s, time.perf_counter()
    n_steps = len(loader)

    def tally() -> EpochTally:
        return EpochTally(loss_sum.item(), correct.item(), seen, time.perf_counter() - start)

    step.optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader, start=getattr(loader, "resume_at", 0)):
        with step.precision.autocast(step.device):
            logits = model(x)
            loss = criterion(logits, y, x)
        step.scaler.scale(loss / step.accum_steps).backward()
        stepped = (i + 1) % step.accum_steps == 0 or i + 1 == n_steps
        if stepped:
            optimizer_step(model, step)
        loss_sum += loss.detach() * len(y)
        correct += criterion.hits(logits.detach(), y)
        seen += len(y)
        if stepped and on_step is not None:
            on_step(i + 1, tally)
        now = time.perf_counter()
        if on_progress is not None and (now - last_report >= every_s or i + 1 == n_steps):
            last_report = now
            avg = (loss_sum / max(seen, 1)).item()  # one sync every `every_s` seconds, not per step
            if not math.isfinite(avg) and reduce is None:
                raise RunError("the training loss became NaN/inf")
            on_progress(i + 1, {"loss": avg, "acc": correct.item() / max(seen, 1),
                                "lr": step.optimizer.param_groups[0]["lr"], "img_s": seen / (now - start)})
    elapsed = time.perf_counter() - start
    total_loss, total_correct, total_seen = (reduce or (lambda v: v))([loss_sum.item(), correct.item(), seen])
    avg = total_loss / max(total_seen, 1)
    if not math.isfinite(avg):
        raise RunError("the training loss became NaN/inf")
    return {"loss": avg, "acc": total_correct / max(total_seen, 1), "time": elapsed,
            "img_s": total_seen / max(elapsed, 1e-9)}


def optimizer_step(model: nn.Module, step: StepSetup) -> None:
    """Unscale and clip if asked, step the optimizer (through the GradScaler) and zero the gradients."""
    if step.grad_clip > 0:
        step.scaler.unscale_(step.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip)
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.optimizer.zero_grad(set_to_none=True)


def _mirrored_logits(model: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = model(x).float()
    return (logits + model(x.flip(3)).float()) / 2 if flip else logits


def _tta_logits(model: nn.Module, x: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    """Logits averaged over mirrors and, with `shift`, half-weighted diagonal shifts by +/- `shift` pixels."""
    logits = _mirrored_logits(model, x, flip)
    if shift <= 0:
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift,) * 4, mode="reflect")
    shifted = [padded[:, :, :h, :w], padded[:, :, 2 * shift:, 2 * shift:]]
    moved = sum(_mirrored_logits(model, s.contiguous(memory_format=torch.channels_last), flip) for s in shifted) / 2
    return (logits + moved) / 2


@torch.no_grad()
def predict_logits(model: nn.Module, loader, precision: Precision, device: torch.device,
                   tta: bool = False, shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over a whole loader, in fp32 on the CPU.

    `tta` averages with the mirrored image; `shift` also averages over images shifted by +/- `shift` pixels.
    """
    model.eval()
    all_logits, all_labels = [], []
    for x, y in loader:
        with precision.autocast(device):
            logits = _tta_logits(model, x, tta, shift)
        all_logits.append(logits.cpu())
        all_labels.append(hard_labels(y).cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Loss, top-1 and top-5 accuracy (fractions) from logits; for label sets (multi-hot `labels`) the summed
    binary cross-entropy, subset accuracy (the exact set at probability 0.5) and the macro mAP."""
    if labels.ndim == 2:
        return multilabel_score(logits, labels)
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    return {"loss": round(F.cross_entropy(logits, labels).item(), 6),
            "accuracy": round((topk[:, 0] == labels).double().mean().item(), 6),
            "top5": round((topk == labels[:, None]).any(1).double().mean().item(), 6)}


def multilabel_score(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Loss, subset accuracy and macro mAP (the mean over labels with a present case of scikit-learn's average
    precision) of label-set logits."""
    from sklearn.metrics import average_precision_score

    target = labels.float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").sum(1).mean()
    present = labels.bool().any(0)
    ap = average_precision_score(labels[:, present].numpy(), logits[:, present].float().numpy(), average="macro") \
        if present.any() else 0.0
    return {"loss": round(loss.item(), 6), "accuracy": round(((logits > 0) == labels.bool()).all(1).double().mean().item(), 6),
            "map": round(float(ap), 6)}


def headline(scores: dict) -> float:
    """The figure a run selects its best epoch, stops early and reaches its target by: mAP for label sets,
    else accuracy."""
    return scores.get("map", scores["accuracy"])


def score_loader(model: nn.Module, loader, precision: Precision, device: torch.device, tta: bool = False) -> dict:
    """Loss, accuracy and top-5 of `model` on `loader`."""
    return score(*predict_logits(model, loader, precision, device, tta))
