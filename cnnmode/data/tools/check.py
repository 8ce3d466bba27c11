"""`check_data`: everything wrong with a dataset before anyone trains on it, as one JSON-ready report.

Per file: zero-byte, truncated, not an image, unreadable, too small, unusual mode, EXIF rotation. Across files:
exact duplicates (same bytes) and near-duplicates (perceptual hash) within a split and across splits (leakage),
class counts per split with the imbalance ratio, classes missing from a split, and layout problems.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from cnnmode.data.archive import Limits
from cnnmode.data.source_layout import SPLIT_NAMES
from cnnmode.data.tools.options import CheckOptions
from cnnmode.data.tools.dupes import exact_groups, group_pairs, near_pairs
from cnnmode.data.tools.dataset_figures import duplicates_figure
from cnnmode.data.tools.images import UNUSUAL_MODES, Looked, look, phash
from cnnmode.data.tools.listing import Entry, Listing, list_dataset, read_entries, training_limits

UNUSABLE = ("empty", "truncated", "not_image", "unreadable")  # kinds whose files training skips
KEEP_ORDER = {"test": 0, "val": 1, "train": 2}  # a leaked copy is kept in the first of these, moved elsewhere
HASH_BATCH = 4096


def _look_all(listing: Listing, limits: Limits, tick: Callable[[int], None]) -> tuple[list[Looked], np.ndarray]:
    """Look at every file; (what each is, the perceptual hashes of the decodable ones, 0 elsewhere)."""
    looked, hashes, flat = [], np.zeros(len(listing.entries), np.uint64), np.ones(len(listing.entries), bool)
    pending: list[int] = []

    def flush() -> None:
        if pending:
            h, f = phash(np.stack([looked[i].gray for i in pending]))
            hashes[pending], flat[pending] = h, f
            for i in pending:
                looked[i].gray = None
            pending.clear()

    for e, data, reason in read_entries(listing, limits, tick):
        seen = Looked(reason, "unreadable") if reason else look(data)
        looked.append(seen)
        if seen.gray is not None:
            pending.append(len(looked) - 1)
            if len(pending) >= HASH_BATCH:
                flush()
    flush()
    return looked, hashes, flat


def _file_findings(entries: list[Entry], looked: list[Looked], opts: CheckOptions) -> list[dict]:
    """Unusable files, too-small images, unusual modes (grey in a colour set included) and EXIF rotations."""
    modes = Counter(s.mode for s in looked if not s.problem)
    colour = bool(modes) and modes.most_common(1)[0][0] in ("RGB", "YCbCr", "CMYK")
    out = []
    for e, s in zip(entries, looked):
        where = {"path": e.name, "split": e.split, "class": e.label}
        if s.problem:
            out.append({"kind": s.kind, **where, "detail": s.problem})
            continue
        if min(s.size) < opts.min_size:
            out.append({"kind": "too_small", **where, "detail": f"{s.size[0]}x{s.size[1]} px, under {opts.min_size}"})
        if s.mode in UNUSUAL_MODES:
            out.append({"kind": "unusual_mode", **where, "detail": f"{s.mode} ({UNUSUAL_MODES[s.mode]})"})
        elif colour and s.mode == "L":
            out.append({"kind": "unusual_mode", **where, "detail": "L (greyscale in a colour set)"})
        if s.orientation != 1:
            out.append({"kind": "exif_rotation", **where,
                        "detail": f"EXIF orientation {s.orientation}: viewers rotate it; cnnmode does too"})
    return out


def _duplicate_findings(entries: list[Entry], looked: list[Looked], hashes: np.ndarray, flat: np.ndarray,
                        opts: CheckOptions) -> list[dict]:
    """Groups of exact and near-duplicates: one finding per split holding two or more copies, and one `leak`
    per group found in more than one split."""
    shas = [s.sha256 for s in looked]
    groups = [(g, "exact", 0) for g in exact_groups(shas)]
    if opts.near >= 0:
        skip = flat | np.array([bool(s.problem) for s in looked])
        pairs = {p: d for p, d in near_pairs(hashes, skip, opts.near).items() if shas[p[0]] != shas[p[1]]}
        groups += _near_groups(pairs)
    out = []
    for members, match, distance in sorted(groups, key=lambda g: min(entries[i].name for i in g[0])):
        members = sorted(members, key=lambda i: entries[i].name)
        by_split: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_split[entries[i].split].append(i)
        labels = sorted({entries[i].label for i in members})
        common = {"match": match, "distance": distance, "labels_differ": len(labels) > 1}
        for split, idx in by_split.items():
            if len(idx) > 1:
                out.append({"kind": "duplicate", "split": split, **common,
                            "files": [{"path": entries[i].name, "class": entries[i].label} for i in idx]})
        if len(by_split) > 1:
            out.append({"kind": "leak", "splits": sorted(by_split, key=SPLIT_NAMES.index), **common,
                        "files": [{"path": entries[i].name, "split": entries[i].split, "class": entries[i].label}
                                  for i in members]})
    return out


def _near_groups(pairs: dict[tuple[int, int], int]) -> list[tuple[list[int], str, int]]:
    """Near-duplicate groups (pairs joined transitively) with the largest distance of a pair inside each."""
    groups = group_pairs(list(pairs))
    group_of = {i: k for k, g in enumerate(groups) for i in g}
    widest = [0] * len(groups)
    for (i, _), d in pairs.items():
        widest[group_of[i]] = max(widest[group_of[i]], d)
    return [(g, "near", widest[k]) for k, g in enumerate(groups)]


def _counts(listing: Listing, looked: list[Looked]) -> dict[str, dict[str, int]]:
    """Decodable images per class per split (what training will see; label sets: per label)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for e, s in zip(listing.entries, looked):
        if not s.problem:
            counts[e.split].update(listing.labels_of(e))
    return {split: dict(sorted(counts[split].items())) for split in SPLIT_NAMES if split in counts}


def _unlabelled(listing: Listing, looked: list[Looked]) -> dict[str, int]:
    """Label sets: usable images with an empty set, per split."""
    found = Counter(e.split for e, s in zip(listing.entries, looked) if not s.problem and not listing.labels_of(e))
    return {split: found[split] for split in SPLIT_NAMES if split in found}


def _class_findings(listing: Listing, counts: dict[str, dict[str, int]], opts: CheckOptions) -> list[dict]:
    """Classes with no usable images in a split, classes unknown to train, and a train imbalance."""
    train = set(listing.class_dirs.get("train", ()))
    out = []
    for split in listing.splits():
        present = {c for c, n in counts.get(split, {}).items() if n}
        missing = sorted(train - present)
        if missing:
            out.append({"kind": "missing_class", "split": split, "classes": missing,
                        "detail": f"{len(missing)} class(es) of train/ with no usable image in {split}/"})
        extra = sorted(present - train)
        if extra and split != "train":
            out.append({"kind": "missing_class", "split": "train", "classes": extra,
                        "detail": f"class(es) in {split}/ but not in train/: training skips their images"})
    ratio = imbalance(counts.get("train", {}))
    if ratio and ratio["ratio"] >= opts.max_imbalance:
        out.append({"kind": "imbalance", "split": "train", **ratio,
                    "detail": f"largest/smallest class {ratio['ratio']:.1f}x ({ratio['largest']} / "
                              f"{ratio['smallest']}); consider train.class_weights=auto or data.sampler=balanced"})
    return out


def imbalance(counts: dict[str, int]) -> dict | None:
    """{"ratio", "largest", "smallest"} of a split's non-empty class counts, or None with fewer than two."""
    nonzero = {c: n for c, n in counts.items() if n}
    if len(nonzero) < 2:
        return None
    largest, smallest = max(nonzero, key=nonzero.get), min(nonzero, key=nonzero.get)
    return {"ratio": round(nonzero[largest] / nonzero[smallest], 2), "largest": largest, "smallest": smallest}


def to_move(findings: list[dict]) -> list[dict]:
    """The files `--fix` would quarantine, each once with its reason: unusable and too-small files, leaked copies
    outside the split they are kept in (test first), and all but one copy in each duplicate group (the first by
    name of those not already moved, so a group never loses every copy)."""
    moves = {f["path"]: f["kind"] for f in findings if f["kind"] in (*UNUSABLE, "too_small")}
    for f in (f for f in findings if f["kind"] == "leak"):
        keep = min(f["splits"], key=KEEP_ORDER.get)
        kept = next(x["path"] for x in f["files"] if x["split"] == keep)
        for file in f["files"]:
            if file["split"] != keep:
                moves.setdefault(file["path"], f"{f['match']} copy of {keep} image {kept}")
    for f in (f for f in findings if f["kind"] == "duplicate"):
        staying = [x["path"] for x in f["files"] if x["path"] not in moves]  # never move every copy
        for path in staying[1:]:
            moves[path] = f"{f['match']} duplicate of {staying[0]}"
    return [{"path": p, "reason": r} for p, r in sorted(moves.items())]


def check_data(path_text: str, opts: CheckOptions | None = None, limits: Limits | None = None,
               progress: Callable[[int, int], None] | None = None, pairs_png: Path | None = None,
               root: str = "./data") -> dict:
    """Check a class-folder tree or archive; returns the report (see the module docstring). `progress(done,
    total)` is called as files are read; `pairs_png` gets a picture of the first leaks and duplicates; `root` is
    where named (torchvision) datasets are kept."""
    opts = (opts or CheckOptions()).check()
    limits = limits or training_limits()
    start = time.perf_counter()
    listing = list_dataset(path_text, limits, root)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(listing.entries))

    looked, hashes, flat = _look_all(listing, limits, tick)
    counts = _counts(listing, looked)
    findings = (_file_findings(listing.entries, looked, opts)
                + _duplicate_findings(listing.entries, looked, hashes, flat, opts)
                + _class_findings(listing, counts, opts)
                + [{"kind": "layout", **problem} for problem in listing.layout])
    classes = sorted(set().union(*listing.class_dirs.values())) if listing.class_dirs else []
    if pairs_png is not None:
        duplicates_figure(listing, findings, pairs_png, limits)
    good = [s for s in looked if not s.problem]
    return {
        "source": path_text, "kind": listing.kind, "files": len(listing.entries),
        "task": "multilabel" if listing.multilabel else "single", "classes": classes, "counts": counts,
        **({"unlabelled": _unlabelled(listing, looked)} if listing.multilabel else {}),
        "imbalance": {split: imbalance(c) for split, c in counts.items()},
        "modes": dict(Counter(s.mode for s in good).most_common()),
        "formats": dict(Counter(s.format for s in good).most_common()),
        "options": vars(opts), "findings": findings,
        "summary": dict(Counter(f["kind"] for f in findings)),
        "to_move": to_move(findings), "clean": not findings,
        "seconds": round(time.perf_counter() - start, 2),
    }
