"""Pictures of a dataset (matplotlib's Agg backend: no display needed), written atomically."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["class_counts_figure", "plt", "save_png"]

from cnnmode.files import atomic_write  # noqa: E402


def save_png(fig, path: Path) -> Path:
    """Write the figure as a PNG (atomically) and close it."""
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def class_counts_figure(counts: dict[str, dict[str, int]], classes: list[str], path: Path, title: str) -> Path:
    """Horizontal bars of images per class, one colour per split (log scale when the counts span 20x)."""
    splits = list(counts)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * len(classes) * max(1, len(splits)) ** 0.5))
    height = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        values = [counts[split].get(c, 0) for c in classes]
        ax.barh([i + k * height for i in range(len(classes))], values, height=height, label=split)
    ax.set_yticks([i + height * (len(splits) - 1) / 2 for i in range(len(classes))], classes)
    ax.invert_yaxis()
    every = [n for split in splits for n in counts[split].values() if n]
    if every and max(every) >= 20 * min(every):
        ax.set_xscale("log")
    ax.set_xlabel("images")
    ax.set_title(title)
    ax.legend()
    return save_png(fig, path)
