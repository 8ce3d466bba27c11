"""`preview_grid`: a grid of random images with their labels, one grid per split (the seed's 5x5 look)."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from cnnmode.data.archive import Limits
from cnnmode.data.decode import DECODE_ERRORS, pil_to_mode
from cnnmode.data.tools.dataset_figures import plt, save_fig
from cnnmode.data.tools.listing import list_dataset, read_entries, training_limits
from cnnmode.errors import UsageError


MAX_PER_SPLIT = 400  # a 20 x 20 grid per split: more tiles than that are too small to see


def preview_grid(path_text: str, out: Path, n: int = 25, seed: int = 0, limits: Limits | None = None,
                 root: str = "./data") -> dict:
    """Draw `n` random images per split (seeded) into one picture at `out`; {split: images shown}."""
    if not 1 <= n <= MAX_PER_SPLIT:
        raise UsageError(f"--n {n}: show 1 to {MAX_PER_SPLIT} images per split")
    limits = limits or training_limits()
    listing = list_dataset(path_text, limits, root)
    rng = np.random.default_rng(seed)
    chosen = []
    for split in listing.splits():
        entries = [e for e in listing.entries if e.split == split]
        chosen += [entries[i] for i in sorted(rng.choice(len(entries), min(n, len(entries)), replace=False))]
    images = {}
    for e, data, reason in read_entries(listing, limits, entries=chosen):
        try:
            with Image.open(io.BytesIO(data)) as img:
                images[e.name] = pil_to_mode(img, 3)
        except DECODE_ERRORS:
            continue  # shown as a blank tile labelled unreadable
    splits = [s for s in listing.splits() if any(e.split == s for e in chosen)]
    side = math.ceil(math.sqrt(max(sum(e.split == s for e in chosen) for s in splits) if splits else 1))
    fig = plt.figure(figsize=(2.2 * side * len(splits), 2.3 * side + 0.4))
    for sub, split in zip(np.atleast_1d(fig.subfigures(1, len(splits))), splits):
        sub.suptitle(split, fontsize=14)
        axes = sub.subplots(side, side)
        picks = [e for e in chosen if e.split == split]
        for ax, i in zip(np.ravel(axes), range(side * side)):
            ax.axis("off")
            if i < len(picks):
                img = images.get(picks[i].name)
                if img is not None:
                    ax.imshow(img)
                ax.set_title(picks[i].label if img is not None else f"{picks[i].label} (unreadable)", fontsize=9)
    save_fig(fig, Path(out))
    return {s: sum(1 for e in chosen if e.split == s) for s in splits}
