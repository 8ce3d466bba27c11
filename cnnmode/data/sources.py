"""Where images come from: named torchvision datasets, class-folder trees, and archives of them.

A source is listed as relative POSIX paths; `find_layout` turns those into splits of (path, class) items.
Archives are read in place for small images and extracted (safely) for large ones.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cnnmode.errors import RunError, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
SPLIT_NAMES = ("train", "val", "test")
NAMED = ("cifar10", "cifar100", "mnist", "fashion-mnist")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass
class Layout:
    """Items per split (`train`, and `test`/`val` when the data has them), the class names, and skipped files."""
    splits: dict[str, list[tuple[str, int]]]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def is_archive(path: str) -> bool:
    """True for .tar, .tar.gz, .tgz and .zip paths."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def check_member(name: str) -> str:
    """Refuse archive members that would land outside the extraction folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise RunError(f"archive member '{name}' has an absolute or parent path; refusing the archive")
    return str(p)


class Archive:
    """Read-only view of a .tar/.tar.gz/.zip: member listing and member bytes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.lower().endswith(".zip") else None
        self._tar = None if self._zip else tarfile.open(path)

    def listing(self) -> tuple[list[str], set[str]]:
        """(file names, directory names), every name checked for safety."""
        files, dirs = [], set()
        if self._zip:
            for info in self._zip.infolist():
                name = check_member(info.filename).rstrip("/")
                (dirs.add(name) if info.is_dir() else files.append(name))
        else:
            for m in self._tar.getmembers():
                name = check_member(m.name)
                if m.isdir():
                    dirs.add(name)
                elif m.isfile():
                    files.append(name)
        return files, dirs

    def read_all(self) -> dict[str, bytes]:
        """Every regular file's bytes, in one sequential pass (fast for .tar.gz)."""
        if self._zip:
            return {check_member(i.filename): self._zip.read(i) for i in self._zip.infolist() if not i.is_dir()}
        out = {}
        with tarfile.open(self.path) as tar:
            for m in tar:
                if m.isfile():
                    out[check_member(m.name)] = tar.extractfile(m).read()
        return out

    def read_first(self, names: set[str], limit: int) -> dict[str, bytes]:
        """Bytes of the first `limit` wanted members in archive order (a cheap probe)."""
        out = {}
        if self._zip:
            for n in sorted(names)[:limit]:
                out[n] = self._zip.read(n)
            return out
        with tarfile.open(self.path) as tar:
            for m in tar:
                if m.isfile() and m.name in names:
                    out[m.name] = tar.extractfile(m).read()
                    if len(out) >= limit:
                        break
        return out

    def extract_to(self, folder: Path) -> None:
        """Extract every member under `folder` (names already checked; tar also filtered)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self._zip:
            self._zip.extractall(folder)
        else:
            with tarfile.open(self.path) as tar:
                tar.extractall(folder, filter="data")


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


def _strip_top(files: list[str], dirs: set[str]) -> str:
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
    prefix = _strip_top(files, dirs)
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
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    else:
        for rel in sorted(list_folder(path)[0]):
            st = (path / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def open_source(path_text: str) -> tuple[Path, list[str], set[str], Archive | None]:
    """Check a data path exists and list it: (path, files, dirs, archive or None)."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UsageError(f"data.path '{path_text}' does not exist; give {', '.join(NAMED)}, "
                         "a class-folder tree, or a .tar/.tar.gz/.zip of one")
    if path.is_file():
        if not is_archive(str(path)):
            raise UsageError(f"data.path '{path_text}' is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        try:
            archive = Archive(str(path))
            files, dirs = archive.listing()
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
            raise RunError(f"cannot read archive {path_text}: {e}") from None
        return path, files, dirs, archive
    files, dirs = list_folder(path)
    if not files:
        raise UsageError(f"data.path '{path_text}' is an empty folder")
    return path, files, dirs, None


def read_bytes(path: Path, archive: Archive | None, names: list[str]) -> dict[str, bytes]:
    """Bytes of the named files, from the archive in one pass or from disk."""
    if archive is not None:
        wanted = set(names)
        return {k: v for k, v in archive.read_all().items() if k in wanted}
    return {n: (path / n).read_bytes() for n in names}

