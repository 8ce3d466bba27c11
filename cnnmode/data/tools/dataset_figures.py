"""Pictures of a dataset: images per class and split, and the duplicate groups `data check` finds."""
from __future__ import annotations

from pathlib import Path

from cnnmode.figures import plt, save_fig
from cnnmode.files import printable

__all__ = ["class_counts_figure", "duplicates_figure", "plt", "save_fig"]


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
    return save_fig(fig, path)


def duplicates_figure(listing, findings: list[dict], path: Path, limits, rows: int = 8) -> Path | None:
    """The first `rows` leak groups, then duplicate groups, one row each, every image with its split and class;
    None when there are none."""
    import io

    from PIL import Image

    from cnnmode.data.decode import DECODE_ERRORS
    from cnnmode.data.tools.listing import read_entries

    groups = ([f for f in findings if f["kind"] == "leak"] + [f for f in findings if f["kind"] == "duplicate"])[:rows]
    if not groups:
        return None
    wanted = {x["path"] for g in groups for x in g["files"][:6]}
    images = {}
    for e, data, _ in read_entries(listing, limits, entries=[e for e in listing.entries if e.name in wanted]):
        try:
            with Image.open(io.BytesIO(data)) as img:
                images[e.name] = img.convert("RGB")
        except DECODE_ERRORS:
            continue
    cols = max(min(len(g["files"]), 6) for g in groups)
    fig, axes = plt.subplots(len(groups), cols, figsize=(1.9 * cols, 2.1 * len(groups)), squeeze=False)
    for row, g in zip(axes, groups):
        for ax in row:
            ax.axis("off")
        for ax, x in zip(row, g["files"][:6]):
            if x["path"] in images:
                ax.imshow(images[x["path"]])
            ax.set_title(printable(f"{x.get('split', g.get('split', ''))} · {x['class']}\n{Path(x['path']).name}"),
                         fontsize=7)
        row[0].text(-0.1, 0.5, f"{g['kind']}\n{g['match']} d={g['distance']}", transform=row[0].transAxes,
                    ha="right", va="center", fontsize=8)
    fig.suptitle("leaks between splits, then duplicates within a split")
    fig.tight_layout()
    return save_fig(fig, path)
