"""Training pictures: learning curves and the 8-panel predictions figure."""
from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.ticker import MaxNLocator

from cnnmode.figures import plt, save_fig, to_display


def _curves(ax_loss, ax_acc, history: list[dict]) -> None:
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["val_acc"] for h in history], "o-", label="validation")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="%")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss, accuracy and learning rate per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _curves(axes[0], axes[1], history)
    axes[2].plot([h["epoch"] for h in history], [h["lr"] for h in history], "o-", color="tab:purple")
    axes[2].set(title="Learning rate (end of epoch)", xlabel="epoch", yscale="log")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].grid(alpha=0.3)
    return save_fig(fig, path)


def predictions_figure(history: list[dict], images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor,
                       classes: list[str], mean: list[float], std: list[float], path: Path) -> Path:
    """Loss curve, accuracy curve and six test images framed green (right) or red (wrong)."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    _curves(axes[0, 0], axes[0, 1], history)
    shown = to_display(images[:6], mean, std).numpy()
    for ax, img, y, p in zip(list(axes[0, 2:]) + list(axes[1]), shown, labels[:6], probs[:6]):
        conf, pred = (v.item() for v in p.max(0))
        y = int(y)
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        color = "green" if pred == y else "red"
        ax.set_title(f"P: {classes[pred]} ({100 * conf:.0f}%) / T: {classes[y]}", color=color, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(4)
    return save_fig(fig, path)
