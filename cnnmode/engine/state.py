"""A run's progress between epochs: what last.pt carries besides the weights, and the history.csv it writes."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from cnnmode.files import atomic_write_text

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "images_per_s",
                  "peak_mem_mb"]


@dataclass
class RunState:
    """Progress that a checkpoint carries besides weights and optimizer."""
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    train_time_s: float = 0.0
    time_to_target_s: float | None = None
    step: int = 0  # batches of epoch `epoch + 1` done when a mid-epoch checkpoint was written (0 = at an epoch end)
    partial: dict | None = None  # that epoch's running sums (an EpochTally) at `step`

    def note_target(self, target: float, accuracy: float) -> None:
        """Record the training time at which `accuracy` first reaches `target` (0 = no target)."""
        if target and self.time_to_target_s is None and accuracy >= target:
            self.time_to_target_s = round(self.train_time_s, 2)


def write_history(path: Path, history: list[dict]) -> None:
    """history.csv, rewritten atomically."""
    buf = io.StringIO()
    extra = ["val_map"] if history and "val_map" in history[0] else []  # label sets: the figure that selects
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS + extra)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def plain_state(model: nn.Module) -> dict:
    """The model's weights on the CPU, without torch.compile's wrapper names."""
    module = getattr(model, "_orig_mod", model)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
