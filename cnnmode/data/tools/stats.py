"""`dataset_stats`: the numbers of a dataset before training: per-channel mean/std of the training images (what
`train` normalises with), image sizes and aspect ratios, modes, file formats and sizes, images per class."""
from __future__ import annotations

import io
import time
from pathlib import Path
from collections import Counter, defaultdict
from typing import Callable

import numpy as np
from PIL import Image

from cnnmode.data.archive import Limits
from cnnmode.data.decode import DECODE_ERRORS, pil_to_mode
from cnnmode.data.tools.dataset_figures import plt, save_fig
from cnnmode.data.tools.listing import list_dataset, read_entries, training_limits
from cnnmode.errors import UsageError


class _Moments:
    """Running per-channel sums of pixels in [0, 1]."""

    def __init__(self) -> None:
        self.n, self.total, self.sq = 0, np.zeros(3), np.zeros(3)

    def add(self, rgb: np.ndarray) -> None:
        x = rgb.reshape(-1, 3).astype(np.float64) / 255
        self.n += len(x)
        self.total += x.sum(0)
        self.sq += (x * x).sum(0)

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean = self.total / max(self.n, 1)
        std = np.sqrt(np.maximum(self.sq / max(self.n, 1) - mean * mean, 0))
        return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _histogram(values: list[float], bins: list[float]) -> dict[str, int]:
    counts, edges = np.histogram(values, bins=bins)
    return {f"{edges[i]:g}-{edges[i + 1]:g}": int(c) for i, c in enumerate(counts)}


def dataset_stats(path_text: str, sample: int = 5000, seed: int = 0, limits: Limits | None = None,
                  progress: Callable[[int, int], None] | None = None, root: str = "./data",
                  plot: Path | None = None) -> dict:
    """Statistics of a class-folder tree or archive; mean/std from a seeded sample of up to `sample` training
    images (0 = all); with `plot`, their picture is drawn there too."""
    if sample < 0:
        raise UsageError(f"--sample {sample}: give a number of images (0 = all of them)")
    start = time.perf_counter()
    limits = limits or training_limits()
    listing = list_dataset(path_text, limits, root)
    train = [i for i, e in enumerate(listing.entries) if e.split == "train"]
    rng = np.random.default_rng(seed)
    picked = set(train if not sample or sample >= len(train) else rng.choice(train, sample, replace=False).tolist())
    moments, sizes, modes, formats, file_kb = _Moments(), [], Counter(), Counter(), []
    counts: dict[str, Counter] = defaultdict(Counter)
    together: Counter = Counter()  # label sets: (label, label) pairs in one training image
    unlabelled: Counter = Counter()
    unreadable, done = 0, [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(listing.entries))

    used = 0  # sampled images whose pixels went into the mean/std
    for i, (e, data, reason) in enumerate(read_entries(listing, limits, tick)):
        try:
            with Image.open(io.BytesIO(data)) as img:
                size, mode, fmt = img.size, img.mode, img.format or "?"
                rgb = np.asarray(pil_to_mode(img, 3))  # decode every file, so a truncated one counts as unreadable
        except DECODE_ERRORS:
            unreadable += 1
            continue
        sizes.append(size)
        modes[mode] += 1
        formats[fmt] += 1
        if i in picked:
            moments.add(rgb)
            used += 1
        file_kb.append(len(data) / 1024)
        labels = listing.labels_of(e)
        counts[e.split].update(labels)
        unlabelled[e.split] += not labels
        if e.split == "train" and listing.multilabel:
            together.update((a, b) for a in labels for b in labels)
    mean, std = moments.mean_std()
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    aspects = [w / h for w, h in sizes if h]
    stats = {
        "source": path_text, "images": len(sizes), "unreadable": unreadable,
        "counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "mean": mean, "std": std, "stats_from": used,
        "width": _summary(widths), "height": _summary(heights),
        "sizes": {f"{w}x{h}": n for (w, h), n in Counter(sizes).most_common(10)},
        "aspect_ratio": _histogram(aspects, [0, 0.5, 0.75, 0.9, 1.1, 1.34, 2, max(aspects + [2]) + 1e-9]),
        "modes": dict(modes.most_common()), "formats": dict(formats.most_common()),
        "file_kb": _summary(file_kb), "seconds": round(time.perf_counter() - start, 2),
    }
    if listing.multilabel:
        names = sorted(counts.get("train", {}))
        stats |= {"task": "multilabel", "unlabelled": dict(unlabelled),
                  "labels_per_image": round(sum(counts["train"].values()) / max(len(train), 1), 3),
                  "cooccurrence": {a: {b: together[a, b] for b in names} for a in names}}
    if plot is not None:
        stats_figure(stats, sizes, plot)
        if listing.multilabel:
            cooccurrence_figure(stats["cooccurrence"], plot.with_name(plot.stem + "-cooccurrence.png"))
    return stats


def cooccurrence_figure(table: dict[str, dict[str, int]], path: Path) -> Path:
    """Label sets: how many training images carry each pair of labels (the diagonal: each label's count)."""
    names = list(table)
    values = np.array([[table[a][b] for b in names] for a in names])
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2),) * 2)
    im = ax.imshow(values, cmap="Purples")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(xticks=range(len(names)), yticks=range(len(names)), title="training images with both labels")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, str(values[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] > values.max() / 2 else "black")
    return save_fig(fig, path)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = np.percentile(values, [0, 50, 100])
    return {"min": round(float(q[0]), 1), "median": round(float(q[1]), 1), "max": round(float(q[2]), 1),
            "mean": round(float(np.mean(values)), 1)}


def stats_figure(stats: dict, sizes: list[tuple[int, int]], path: Path) -> None:
    """Image sizes (width against height), aspect ratios, channel means and images per class, in one picture."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    sizes = np.array(sizes or [(0, 0)])
    axes[0, 0].scatter(sizes[:, 0], sizes[:, 1], s=6, alpha=0.3)
    axes[0, 0].set(title="image sizes", xlabel="width (px)", ylabel="height (px)")
    aspect = stats["aspect_ratio"]
    axes[0, 1].bar(list(aspect), list(aspect.values()))
    axes[0, 1].set(title="aspect ratio (width / height)", ylabel="images")
    axes[1, 0].bar(["R", "G", "B"], stats["mean"], yerr=stats["std"], color=["tab:red", "tab:green", "tab:blue"],
                   capsize=6)
    axes[1, 0].set(title=f"channel mean ± std ({stats['stats_from']} training images)", ylim=(0, 1))
    for split, counts in stats["counts"].items():
        axes[1, 1].barh(list(counts), list(counts.values()), alpha=0.6, label=split)
    axes[1, 1].invert_yaxis()
    axes[1, 1].set(title="images per class", xlabel="images")
    axes[1, 1].legend()
    fig.suptitle(stats["source"])
    fig.tight_layout()
    save_fig(fig, path)
