"""`--fix`: move (never delete) the files a check would drop into a quarantine folder, keeping their relative
paths, with a manifest that `restore` reads to put every file back."""
from __future__ import annotations

import filecmp
import json
import shutil
import time
from pathlib import Path, PurePosixPath

from cnnmode.errors import RunError, UsageError
from cnnmode.files import atomic_write_text

MANIFEST = "manifest.json"


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        raise RunError(f"{dst} already exists; not overwriting it")
    shutil.move(src, dst)  # a rename on one file system; copy then delete across file systems


def quarantine(report: dict, root: Path, folder: Path) -> tuple[int, Path]:
    """Move the report's `to_move` files from the data folder `root` into `folder`; returns (files moved, the
    manifest path). Each file's manifest entry is written before it moves, so a fix killed at any point can be
    undone by `restore` (an entry whose file never moved is passed over)."""
    if report["kind"] != "folder":
        raise UsageError(f"--fix moves files within a class-folder tree; {report['source']} is a {report['kind']}"
                         " source: copy it into a folder first (cnnmode data split SOURCE --out DIR --copy)")
    root, folder = Path(root).resolve(), Path(folder).resolve()
    if folder == root or root in folder.parents or folder in root.parents:
        raise UsageError(f"the quarantine folder {folder} must be outside the data folder {root}, and not hold it")
    manifest_path = folder / MANIFEST
    manifest = {"data": str(root), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "moved": []}
    if manifest_path.exists():
        manifest = _read_manifest(folder)
        if Path(manifest["data"]) != root:
            raise UsageError(f"{folder} already quarantines files of {manifest['data']}; choose another folder")
    moved = 0
    for item in report["to_move"]:
        src = root / item["path"]
        if not (src.exists() or src.is_symlink()):
            continue
        manifest["moved"].append({"path": item["path"], "reason": item["reason"]})
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
        _move(src, folder / item["path"])
        moved += 1
    return moved, manifest_path


def _safe_relative(path: str) -> str:
    """A manifest path must stay inside both folders: relative, without `..`."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\\" in path:
        raise RunError(f"the manifest lists an unsafe path {path!r}; refusing to move anything")
    return path


def _read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("moved"), list) or "data" not in manifest:
            raise ValueError("no 'data' or 'moved' entry")
        for item in manifest["moved"]:
            _safe_relative(item["path"])
        return manifest
    except FileNotFoundError:
        raise UsageError(f"{folder} has no {MANIFEST}; give the folder passed to `data check --fix`") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"cannot read {path}: {e}") from None


def restore(folder: Path) -> tuple[int, Path]:
    """Move every file listed in `folder`'s manifest back where it came from; (files restored, data folder).
    Files already back are passed over; the manifest is removed when the folder is empty of them."""
    folder = Path(folder).resolve()
    manifest = _read_manifest(folder)
    root = Path(manifest["data"])
    restored = 0
    for item in manifest["moved"]:
        src, dst = folder / item["path"], root / item["path"]
        if (src.exists() or src.is_symlink()) and dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            src.unlink()  # a move across file systems killed between its copy and its delete: the file never left
            _remove_empty_parents(src.parent, folder)
        elif src.exists() or src.is_symlink():
            _move(src, dst)
            restored += 1
            _remove_empty_parents(src.parent, folder)
    (folder / MANIFEST).unlink()
    return restored, root


def _remove_empty_parents(here: Path, stop: Path) -> None:
    """Remove the folders a restored file leaves empty, up to (not including) `stop`."""
    while here != stop and stop in here.parents and not any(here.iterdir()):
        here.rmdir()
        here = here.parent
