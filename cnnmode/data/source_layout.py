"""Where images come from: named torchvision datasets, class-folder trees, and archives of them (see `archive`).

A source is listed as relative POSIX paths; `find_layout` turns those into splits of (path, class) items.
Archives are read in place for small images and extracted (safely) for large ones. From a folder, only regular
files within the size limit are read: links that lead nowhere or in circles, pipes and devices are skipped.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cnnmode.data.archive import Archive, Limits
from cnnmode.errors import UsageError
from cnnmode.files import file_sha256

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
SPLIT_NAMES = ("train", "val", "test")
NAMED = ("cifar10", "cifar100", "mnist", "fashion-mnist")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass
class Layout:
    """Items per split (`train`, and `test`/`val` when the data has them), the class names, and skipped files.
    An item's label is a class index, or with `multilabel` a tuple of them (possibly empty)."""
    splits: dict[str, list[tuple[str, int | tuple[int, ...]]]]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    multilabel: bool = False


def is_archive(path: str) -> bool:
    """True for .tar, .tar.gz, .tgz and .zip paths."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def list_folder(root: Path) -> tuple[list[str], set[str]]:
    """(file paths, directory paths) under root, relative and POSIX, hidden entries skipped."""
    files, dirs = [], set()
    for here, dnames, fnames in os.walk(root):
        dnames[:] = sorted(d for d in dnames if not d.startswith("."))
        rel = Path(here).relative_to(root)
        for d in dnames:
            dirs.add((rel / d).as_posix())
        files.extend((rel / f).as_posix() for f in sorted(fnames) if not f.startswith("."))
    return files, dirs


def strip_top(files: list[str], dirs: set[str]) -> str:
    """Descend through single top-level folders (e.g. `cifar10/`) to the folder that holds the data."""
    prefix = ""
    while True:
        rest = [f[len(prefix):] for f in files]
        tops = {r.split("/", 1)[0] for r in rest}
        if len(tops) != 1 or any("/" not in r for r in rest):
            return prefix
        top = tops.pop()
        if top in SPLIT_NAMES:
            return prefix
        inner = [r[len(top) + 1:] for r in rest]
        if not any("/" in r for r in inner):  # only class/file left below: `top` is a class, not a wrapper
            return prefix
        prefix += top + "/"


def find_layout(files: list[str], dirs: set[str], source: str) -> Layout:
    """Classify files into splits and classes. Files not inside a class folder are ignored."""
    prefix = strip_top(files, dirs)
    rel = [f[len(prefix):] for f in files if f.startswith(prefix)]
    rel_dirs = {d[len(prefix):] for d in dirs if d.startswith(prefix) and len(d) > len(prefix)}
    tops = {r.split("/", 1)[0] for r in rel if "/" in r}
    split_mode = "train" in tops
    skipped: list[tuple[str, str]] = []

    def class_of(parts: list[str]) -> str | None:
        return parts[1] if split_mode and len(parts) >= 3 else (parts[0] if not split_mode and len(parts) >= 2 else None)

    class_dirs = {d.split("/")[1] if split_mode else d.split("/")[0]
                  for d in rel_dirs if (d.count("/") >= 1 if split_mode else True) and
                  (not split_mode or d.split("/")[0] == "train")}
    for r in rel:
        parts = r.split("/")
        c = class_of(parts)
        if c and (not split_mode or parts[0] == "train"):
            class_dirs.add(c)
    classes = sorted(c for c in class_dirs if not c.startswith("."))
    if len(classes) < 2:
        raise UsageError(f"{source}: found {len(classes)} class folder(s) {classes}; need at least 2 "
                         "(layout: CLASS/IMAGE or train/CLASS/IMAGE with test/ or val/)")
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[tuple[str, int]]] = {}
    for r in rel:
        parts = r.split("/")
        c = class_of(parts)
        split = parts[0] if split_mode else "train"
        if c is None or split not in SPLIT_NAMES:
            continue
        if c not in index:
            skipped.append((prefix + r, f"class '{c}' is not in train/"))
            continue
        if Path(r).suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((prefix + r, "not an image file"))
            continue
        splits.setdefault(split, []).append((prefix + r, index[c]))
    counts = {c: 0 for c in classes}
    for _, y in splits.get("train", []):
        counts[classes[y]] += 1
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise UsageError(f"{source}: class folder(s) with no images: {', '.join(empty)}")
    return Layout(splits=splits, classes=classes, skipped=skipped)


def content_key(path: Path) -> str:
    """A hash of the source's content: archive bytes, or a folder's (path, size, mtime) listing."""
    if path.is_file():
        return file_sha256(path)[:24]
    h = hashlib.sha256()
    for rel in sorted(list_folder(path)[0]):
        st = os.lstat(path / rel)  # the link itself: a broken one must not fail the key
        h.update(os.fsencode(rel) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def source_checksum(path_text: str) -> str | None:
    """A data path's fingerprint for the records: the sha256 of an archive or list file, the folder listing's key
    for a tree (names, sizes, modification times), None for a named dataset."""
    if path_text.lower() in NAMED:
        return None
    path = Path(path_text).expanduser()
    if path.is_file():
        return f"sha256:{file_sha256(path)}"
    return f"listing:{content_key(path)}" if path.is_dir() else None


def file_problem(path: Path, limits: Limits) -> str:
    """Why `path` must not be read ('' when it may): links are followed, so a link to an image is fine, while a
    broken link, a loop, a pipe or a device (a link to `/dev/zero`) is not, nor a file over the size limit."""
    try:
        st = os.stat(path)
    except OSError as e:  # broken link, link loop, no permission
        return f"unreadable: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, device or folder)"
    return limits.too_big(st.st_size)


def read_regular(path: Path, limits: Limits) -> tuple[bytes, str]:
    """(bytes, '') of a regular file within the size limit, else (b'', why it was skipped)."""
    problem = file_problem(path, limits)
    if problem:
        return b"", problem
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_file + 1)  # the file may have grown since it was looked at
    except OSError as e:
        return b"", f"unreadable: {e.strerror or e}"
    return (b"", limits.too_big(len(data))) if limits.too_big(len(data)) else (data, "")


def open_source(path_text: str, limits: Limits) -> tuple[Path, list[str], set[str], Archive | None]:
    """Check a data path exists and list it: (path, files, dirs, archive or None)."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UsageError(f"data.path '{path_text}' does not exist; give {', '.join(NAMED)}, "
                         "a class-folder tree, or a .tar/.tar.gz/.zip of one")
    if path.is_file():
        if not is_archive(str(path)):
            raise UsageError(f"data.path '{path_text}' is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        archive = Archive(str(path), limits)
        files, dirs = archive.listing()
        return path, files, dirs, archive
    files, dirs = list_folder(path)
    if not files:
        raise UsageError(f"data.path '{path_text}' is an empty folder")
    return path, files, dirs, None


def read_files(path: Path, archive: Archive | None, names: list[str], limits: Limits,
               first: int | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """(bytes by name, why others were skipped) for the named files (the first `first` of them), from the
    archive in one pass or from the folder."""
    if archive is not None:
        return archive.read_members(set(names), first), archive.damaged
    blobs, skipped = {}, {}
    for name in names[:first]:
        data, reason = read_regular(path / name, limits)
        if reason:
            skipped[name] = reason
        else:
            blobs[name] = data
    return blobs, skipped
