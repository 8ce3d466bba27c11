"""`split_dataset`: a stratified train/val/test tree (symlinks or copies) or an index CSV, reproducible by seed.

Splits the source already has are kept as they are (an official test set is never pooled back into training);
the missing ones are carved from train, class by class.
"""
from __future__ import annotations

import csv
import io
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from cnnmode.data.archive import Limits
from cnnmode.data.tools.listing import Entry, list_dataset, read_entries, training_limits
from cnnmode.errors import UsageError
from cnnmode.files import atomic_folder

MODES = ("link", "copy", "csv")
INDEX = "index.csv"


def stratified_split(entries: list[Entry], val: float, test: float, seed: int,
                     stratum: Callable[[Entry], str] = lambda e: e.label) -> dict[str, list[Entry]]:
    """Carve `val` and `test` fractions (each rounded per class, or per `stratum`) from the train entries; other
    splits the source has are kept, and then not carved again."""
    have = {e.split for e in entries}
    fractions = {"val": 0.0 if "val" in have else val, "test": 0.0 if "test" in have else test}
    out: dict[str, list[Entry]] = defaultdict(list)
    by_class: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        (by_class[stratum(e)] if e.split == "train" else out[e.split]).append(e)
    rng = np.random.default_rng(seed)
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda e: e.name)
        order = rng.permutation(len(items))
        start = 0
        for split in ("test", "val"):
            n = min(int(round(len(items) * fractions[split])), len(items) - 1 - start)  # one stays in train
            out[split] += [Entry(items[i].name, split, items[i].label) for i in order[start:start + n]]
            start += n
        out["train"] += [items[i] for i in order[start:]]
    return {s: sorted(out[s], key=lambda e: e.name) for s in ("train", "val", "test") if out[s]}


def _rarest_label(listing) -> Callable[[Entry], str]:
    """Label sets: each entry's stratum is its rarest label among the train entries ('' for no label)."""
    counts = Counter(c for e in listing.entries if e.split == "train" for c in listing.labels_of(e))
    return lambda e: min(listing.labels_of(e), key=lambda c: (counts[c], c), default="")


def _targets(parts: dict[str, list[Entry]]) -> dict[str, str]:
    """Where each entry goes: SPLIT/CLASS/FILE, a number added to a file name already taken there."""
    taken: set[str] = set()
    out = {}
    for split, entries in parts.items():
        for e in entries:
            name = Path(e.name)
            target, n = f"{split}/{e.label}/{name.name}", 1
            while target in taken:
                target, n = f"{split}/{e.label}/{name.stem}-{n}{name.suffix}", n + 1
            taken.add(target)
            out[e.name] = target
    return out


def split_dataset(path_text: str, out: Path, val: float = 0.1, test: float = 0.1, seed: int = 0,
                  mode: str = "link", limits: Limits | None = None, root: str = "./data") -> dict[str, dict[str, int]]:
    """Write the split to `out` (which must not exist or be empty): a SPLIT/CLASS/FILE tree of symlinks (`link`)
    or copies (`copy`), or `out/index.csv` of path,label,split rows (`csv`). Built in a temporary folder and moved
    into place, so `out` is never half written. Returns images per class per split."""
    if mode not in MODES:
        raise UsageError(f"split mode {mode!r}: choose one of {', '.join(MODES)}")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise UsageError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to less than 1")
    limits = limits or training_limits()
    listing = list_dataset(path_text, limits, root)
    source, target = listing.root.resolve(), Path(out).resolve()
    if listing.kind == "folder" and (target == source or source in target.parents):
        raise UsageError(f"--out {out} is inside the data folder {listing.root}; the split would list itself the next "
                         "time the data is read: choose a folder outside it")
    repeated = sorted(n for n, k in Counter(e.name for e in listing.entries).items() if k > 1)
    if repeated:  # a tar may hold one name twice: only the last copy can be read back, so one would be lost
        raise UsageError(f"{path_text} holds {len(repeated)} member name(s) more than once (e.g. {repeated[0]}); "
                         "which copy is meant is ambiguous: extract the archive and rename them")
    if listing.multilabel and mode != "csv":
        raise UsageError(f"{path_text} holds label sets, which class folders cannot: use --mode csv")
    parts = stratified_split(listing.entries, val, test, seed, _rarest_label(listing) if listing.multilabel
                             else lambda e: e.label)
    with atomic_folder(Path(out)) as tmp:
        if mode == "csv":
            _write_index(tmp, parts, listing.root.resolve(), listing.kind in ("archive", "named"), path_text)
        elif listing.kind in ("archive", "named") or mode == "copy":
            _copy(listing, parts, tmp, limits)
        else:
            for name, target in _targets(parts).items():
                _link(listing.root.resolve() / name, tmp / target)
    counts = {s: defaultdict(int) for s in parts}
    for s, entries in parts.items():
        for e in entries:
            for label in listing.labels_of(e):
                counts[s][label] += 1
    return {s: dict(sorted(c.items())) for s, c in counts.items()}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def _copy(listing, parts: dict[str, list[Entry]], tmp: Path, limits: Limits) -> None:
    targets = _targets(parts)
    for e, data, reason in read_entries(listing, limits, entries=[e for es in parts.values() for e in es]):
        if reason:
            continue  # unreadable members are left out, as training would skip them
        dst = tmp / targets[e.name]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)


def _write_index(tmp: Path, parts: dict[str, list[Entry]], root: Path, is_archive: bool, source: str) -> None:
    if is_archive:
        raise UsageError(f"--csv lists files by path; {source} is an archive: use --copy, or extract it first")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for split, entries in parts.items():
        writer.writerows([str(root / e.name), e.label, split] for e in entries)
    # a file name that is not UTF-8 is written as its own bytes, so the index names the file that exists
    (tmp / INDEX).write_bytes(text.getvalue().encode("utf-8", "surrogateescape"))
