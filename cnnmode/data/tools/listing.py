"""A data path listed for checking: every file with its split and class, and what is wrong with the layout.

Training reads the same tree through `source_layout.find_layout`, which quietly ignores what it cannot place (a
`validation/` folder, files beside the class folders); here each such thing becomes a layout finding with its fix.
"""
from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator
from pathlib import Path, PurePosixPath

from PIL import Image

from cnnmode.config import DataConfig
from cnnmode.data.archive import Archive, Limits
from cnnmode.data.csvlist import is_list, is_multilabel, read_rows
from cnnmode.data.labels import split_cell
from cnnmode.data.source_layout import IMAGE_SUFFIXES, NAMED, SPLIT_NAMES, open_source, read_regular, strip_top

# folder names people give their splits → the name cnnmode reads
SPLIT_ALIASES = {"validation": "val", "valid": "val", "validate": "val", "dev": "val", "eval": "val",
                 "training": "train", "testing": "test"}


@dataclass(frozen=True)
class Entry:
    """One image file: its name as read (relative to the folder, or the archive member), split and class."""
    name: str
    split: str
    label: str


@dataclass
class Listing:
    """What a data path holds, as the check sees it."""
    source: str
    root: Path
    archive: Archive | None
    entries: list[Entry]
    class_dirs: dict[str, set[str]]  # split → class folders found, images or not
    layout: list[dict] = field(default_factory=list)  # {"layout": kind, "problem", "fix", "paths"}
    kind: str = "folder"  # folder, archive, list (a CSV), or named (a torchvision dataset)
    reader: Callable[[str], bytes] | None = None  # named datasets: an entry's image as PNG bytes
    multilabel: bool = False  # a CSV of label sets: an entry's label is `a;b` (or empty)

    def labels_of(self, entry: Entry) -> list[str]:
        """The classes of an entry: its label, or the names of its label set (none for an empty set)."""
        return split_cell(entry.label) if self.multilabel else [entry.label]

    def splits(self) -> list[str]:
        """Split names in train, val, test order."""
        return [s for s in SPLIT_NAMES if s in self.class_dirs]


def training_limits() -> Limits:
    """The file and archive size limits training reads with by default (data.max_file_mb, data.max_total_gb)."""
    defaults = DataConfig()
    return Limits.from_mb_gb(defaults.max_file_mb, defaults.max_total_gb)


def _split_of(top: str, tops: set[str]) -> str | None:
    """The split a top-level folder stands for: its own name, or an alias when the real name is absent."""
    low = top.lower()
    if low in SPLIT_NAMES:
        return low
    alias = SPLIT_ALIASES.get(low)
    return alias if alias and alias not in tops else None


def _named(name: str, root: str) -> Listing:
    """A torchvision dataset (from `root`, downloaded when online) with each image served as PNG bytes."""
    from cnnmode.data.read_splits import load_named

    found = load_named(name, root, 0)
    entries, images = [], {}
    for split, s in found.splits.items():
        for i, (image, y) in enumerate(zip(s.images, s.labels.tolist())):
            entry = Entry(f"{split}/{found.classes[y]}/{i:05d}.png", split, found.classes[y])
            entries.append(entry)
            images[entry.name] = image

    def png(entry_name: str) -> bytes:
        array = images[entry_name].permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(buffer, "PNG", compress_level=1)
        return buffer.getvalue()

    class_dirs = {split: set(found.classes) for split in found.splits}
    return Listing(name, Path(root), None, entries, class_dirs, kind="named", reader=png)


def list_dataset(path_text: str, limits: Limits, root: str = "./data") -> Listing:
    """List a folder tree, archive, CSV list or named torchvision dataset (kept in `root`) into entries and layout
    findings (UsageError for a bad path)."""
    if path_text.lower() in NAMED:
        return _named(path_text.lower(), root)
    if is_list(path_text):
        folder, rows = read_rows(path_text)
        multilabel = is_multilabel(rows, "auto", path_text)
        class_dirs: dict[str, set[str]] = defaultdict(set)
        for _, label, split in rows:
            class_dirs[split].update(split_cell(label) if multilabel else [label])
        return Listing(path_text, folder, None, [Entry(name, split, label) for name, label, split in rows],
                       dict(class_dirs), kind="list", multilabel=multilabel)
    root_path, files, dirs, archive = open_source(path_text, limits)
    prefix = strip_top(files, dirs)
    rel = [f[len(prefix):] for f in files if f.startswith(prefix)]
    rel_dirs = [d[len(prefix):] for d in dirs if d.startswith(prefix) and len(d) > len(prefix)]
    tops = {r.split("/", 1)[0] for r in rel if "/" in r} | {d.split("/", 1)[0] for d in rel_dirs}
    split_mode = any(_split_of(t, tops) for t in tops)
    depth = 2 if split_mode else 1  # parts before the file name: split/class or class
    problems: dict[str, list[str]] = defaultdict(list)
    class_dirs = defaultdict(set)
    for d in rel_dirs:
        parts = d.split("/")
        split = _split_of(parts[0], tops) if split_mode else "train"
        if split and len(parts) == depth:
            class_dirs[split].add(parts[-1])
    entries = []
    for r in rel:
        parts = r.split("/")
        split = _split_of(parts[0], tops) if split_mode else "train"
        if split_mode and "/" in r and split is None:
            problems["unknown_folder"].append(prefix + parts[0] + "/")
        elif len(parts) <= depth:
            problems["stray"].append(prefix + r)
        elif PurePosixPath(r).suffix.lower() not in IMAGE_SUFFIXES:
            problems["not_image_suffix"].append(prefix + r)
        else:
            if len(parts) > depth + 1:
                problems["nested"].append(prefix + "/".join(parts[:depth + 1]) + "/")
            if split_mode and parts[0] != split:  # `Train/` too: training reads only the exact names
                problems["alias"].append(f"{prefix}{parts[0]}/ → {prefix}{split}/")
            class_dirs[split].add(parts[depth - 1])
            entries.append(Entry(prefix + r, split, parts[depth - 1]))
    problems["case_clash"] = _case_clashes(class_dirs, prefix, depth)
    return Listing(path_text, root_path, archive, entries, dict(class_dirs), _layout_findings(problems),
                   kind="archive" if archive is not None else "folder")


def _case_clashes(class_dirs: dict[str, set[str]], prefix: str, depth: int) -> list[str]:
    """Class folders of one split whose names differ only in case (`Cat/`, `cat/`)."""
    out = []
    for split, names in class_dirs.items():
        folded: dict[str, list[str]] = defaultdict(list)
        for name in names:
            folded[name.casefold()].append(name)
        where = f"{prefix}{split}/" if depth > 1 else prefix
        out += [f"{where}{name}/" for group in folded.values() if len(group) > 1 for name in group]
    return out


FIXES = {
    "alias": ("split folder(s) named differently from train/, val/, test/ (names are case-sensitive): training "
              "does not read them as splits",
              "rename them as shown"),
    "unknown_folder": ("folder(s) beside the split folders that are not a split: training ignores them",
                       "move their class folders into train/, val/ or test/, or delete them"),
    "stray": ("file(s) outside any class folder: training ignores them",
              "move each into its class folder (SPLIT/CLASS/FILE or CLASS/FILE)"),
    "nested": ("class folder(s) with sub-folders: their images are counted as the outer class",
               "move the images up into the class folder, or make each sub-folder a class of its own"),
    "case_clash": ("class folder(s) whose names differ only in case: training reads them as separate classes, "
                   "and on Windows and macOS they are one folder",
                   "merge them into one class folder, or rename one"),
    "not_image_suffix": ("file(s) in class folders without an image suffix: training ignores them",
                         f"rename or remove them (read: {', '.join(sorted(IMAGE_SUFFIXES))})"),
}


def _layout_findings(problems: dict[str, list[str]]) -> list[dict]:
    out = []
    for kind, (problem, fix) in FIXES.items():
        paths = sorted(set(problems.get(kind, [])))
        if paths:
            out.append({"layout": kind, "problem": f"{len(paths)} {problem}", "fix": fix, "paths": paths})
    return out


def read_entries(listing: Listing, limits: Limits, tick: Callable[[int], None] = lambda n: None,
                 entries: list[Entry] | None = None) -> Iterator[tuple[Entry, bytes, str]]:
    """(entry, bytes, why it could not be read) for each entry (all by default): one pass over an archive, or
    file by file from a folder. `tick(1)` after each."""
    entries = listing.entries if entries is None else entries
    if listing.reader is not None:
        for e in entries:
            yield e, listing.reader(e.name), ""
            tick(1)
        return
    if listing.archive is not None:
        blobs = listing.archive.read_members({e.name for e in entries})
        for e in entries:
            yield e, blobs.get(e.name, b""), listing.archive.damaged.get(e.name, "" if e.name in blobs else "missing")
            tick(1)
        return
    for e in entries:
        data, reason = read_regular(listing.root / e.name, limits)
        yield e, data, reason
        tick(1)
