"""Small stateful helpers called once per epoch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Stop when validation accuracy has not improved by `min_delta` for `patience` epochs (0 = never)."""
    patience: int = 0
    min_delta: float = 0.0
    best: float = float("-inf")
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record this epoch's value; True when training should stop."""
        if value > self.best + self.min_delta:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
