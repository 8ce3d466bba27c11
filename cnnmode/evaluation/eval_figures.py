"""Evaluation pictures: confusion matrices, per-class accuracy, confused pairs, reliability, image grids."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from cnnmode.figures import plt, save_fig, to_display


def confusion_matrix(cm: np.ndarray, classes: list[str], path: Path, normalized: bool = False, title: str = "",
                     xlabel: str = "predicted", ylabel: str = "true") -> Path:
    """Counts (or row-normalised shares) with class names on both axes."""
    values = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalized else cm
    n = len(classes)
    size = max(6, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(xticks=range(n), yticks=range(n), xlabel=xlabel, ylabel=ylabel,
           title=title or "Confusion matrix" + (" (share of each true class)" if normalized else " (counts)"))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if n <= 30:
        top = values.max() or 1
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalized else f"{int(values[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > top / 2 else "black")
    return save_fig(fig, path)


def _bars(ax, names: list[str], values: list[float], mean: float | None = None) -> None:
    colors = plt.cm.RdYlGn(np.asarray(values))
    ax.barh(range(len(names)), [100 * v for v in values], color=colors)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy %")
    for i, v in enumerate(values):
        ax.text(min(100 * v + 1, 92), i, f"{100 * v:.1f}", va="center", fontsize=8)
    if mean is not None:
        ax.axvline(100 * mean, color="gray", ls="--", label=f"overall {100 * mean:.1f}%")
        ax.legend(loc="lower right")


def per_class_accuracy_all(per_class: dict, overall: float, path: Path) -> Path:
    """Every class's accuracy, sorted from worst to best."""
    items = sorted(per_class.items(), key=lambda kv: kv[1]["accuracy"])
    fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(items) + 1.5)))
    _bars(ax, [k for k, _ in items], [v["accuracy"] for _, v in items], overall)
    ax.set_title("Per-class accuracy (worst first)")
    return save_fig(fig, path)


def per_class_accuracy_top_bottom(per_class: dict, path: Path, k: int = 5) -> Path:
    """The k best and k worst classes side by side."""
    items = sorted(per_class.items(), key=lambda kv: kv[1]["accuracy"])
    k = min(k, max(1, len(items) // 2))
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.45 * k + 1.5)))
    worst, best = items[:k], items[::-1][:k]
    _bars(axes[0], [n for n, _ in worst], [v["accuracy"] for _, v in worst])
    axes[0].set_title(f"{k} worst classes")
    _bars(axes[1], [n for n, _ in best], [v["accuracy"] for _, v in best])
    axes[1].set_title(f"{k} best classes")
    return save_fig(fig, path)


def top_confused_pairs(pairs: list[dict], path: Path) -> Path:
    """The most frequent true → predicted mistakes."""
    fig, ax = plt.subplots(figsize=(8, max(3, 0.4 * len(pairs) + 1.5)))
    if pairs:
        names = [f"{p['true']} → {p['predicted']}" for p in pairs]
        ax.barh(range(len(pairs)), [p["count"] for p in pairs], color="tab:red")
        ax.set_yticks(range(len(pairs)))
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        for i, p in enumerate(pairs):
            ax.text(p["count"], i, f" {p['count']} ({100 * p['share']:.1f}% of {p['true']})", va="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    ax.set(title="Most confused pairs (true → predicted)", xlabel="images")
    return save_fig(fig, path)


def reliability_diagram(bins: list[dict], ece: float, path: Path) -> Path:
    """Accuracy against confidence per bin, with the gap to perfect calibration."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    acc = [b["accuracy"] for b in bins]
    conf = [b["confidence"] if b["count"] else c for b, c in zip(bins, centers)]
    ax.bar(centers, acc, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar(centers, [c - a if b["count"] else 0 for a, c, b in zip(acc, conf, bins)], bottom=acc, width=width,
           edgecolor="red", color="tab:red", alpha=0.3, label="gap")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Reliability diagram (ECE {100 * ece:.2f}%)")
    ax.legend(loc="upper left")
    hist.bar(centers, [b["count"] for b in bins], width=width, color="gray", edgecolor="black")
    hist.set(xlabel="confidence", ylabel="images")
    return save_fig(fig, path)


def gather_images(loader, idx: list[int]) -> torch.Tensor:
    """Normalised images at the given positions of an (unshuffled) evaluation loader."""
    wanted, out, offset = set(idx), {}, 0
    for x, _ in loader:
        for j in range(len(x)):
            if offset + j in wanted:
                out[offset + j] = x[j].float().cpu()
        offset += len(x)
        if len(out) == len(wanted):
            break
    return torch.stack([out[i] for i in idx]) if idx else torch.zeros(0)


def loader_grid(loader, idx: list[int], mean: list[float], std: list[float], titles: list[str], colors: list[str],
                path: Path, title: str) -> Path:
    """`image_grid` of the images at positions `idx` of an (unshuffled) evaluation loader, as people see them."""
    images = to_display(gather_images(loader, idx), mean, std).numpy() if idx else np.zeros((0, 1, 1, 3))
    return image_grid(images, titles, colors, path, title)


def image_grid(images: np.ndarray, titles: list[str], colors: list[str], path: Path, title: str,
               cols: int = 6) -> Path:
    """A grid of (N, H, W, C) images in [0, 1] with coloured titles and frames."""
    n = max(len(images), 1)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, text, color in zip(axes.flat, images, titles, colors):
        ax.axis("on")
        gray = img.shape[-1] == 1
        ax.imshow(img.squeeze(-1) if gray else img, cmap="gray" if gray else None)
        ax.set_title(text, color=color, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(3)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    fig.suptitle(title)
    return save_fig(fig, path)
