"""Matplotlib set up once for files (the Agg backend: no display needed), and what every figure uses: saving a
PNG atomically and turning normalised images back into pixels."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from cnnmode.files import atomic_write  # noqa: E402

__all__ = ["plt", "save_fig", "to_display"]


def save_fig(fig, path: Path) -> Path:
    """Write the figure as a PNG (atomically, creating the folder) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def to_display(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Undo normalisation: (N, C, H, W) float → (N, H, W, C) in [0, 1]."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1)
