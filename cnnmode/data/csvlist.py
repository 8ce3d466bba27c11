"""A CSV list as a data source: `path,label[,split]` rows (a header row naming them is optional), paths relative
to the CSV file's folder or absolute, the split `train` when not given. `cnnmode data split --csv` writes one."""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from cnnmode.data.source_layout import SPLIT_NAMES, Layout
from cnnmode.errors import UsageError


def is_list(path: str) -> bool:
    """True for .csv paths."""
    return str(path).lower().endswith(".csv")


def read_rows(path_text: str) -> tuple[Path, list[tuple[str, str, str]]]:
    """(the CSV's folder, (path, label, split) rows), each row checked."""
    path = Path(path_text).expanduser()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    except FileNotFoundError:
        raise UsageError(f"data.path '{path_text}' does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"cannot read the CSV list {path_text}: {e}") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    out = []
    for n, r in enumerate(rows, 1):
        if len(r) not in (2, 3):
            raise UsageError(f"{path_text} row {n}: expected path,label[,split], got {len(r)} columns")
        split = r[2].strip().lower() if len(r) == 3 and r[2].strip() else "train"
        label = r[1].strip()
        if label in ("", ".", "..") or "/" in label or "\\" in label:
            raise UsageError(f"{path_text} row {n}: label {label!r} must be a plain class name (no / or \\, not . "
                             "or ..)")
        if split not in SPLIT_NAMES:
            raise UsageError(f"{path_text} row {n}: split '{r[2]}' is not one of {', '.join(SPLIT_NAMES)}")
        out.append((r[0].strip(), label, split))
    if not out:
        raise UsageError(f"{path_text} lists no images; expected path,label[,split] rows")
    return path.parent, out


def list_layout(path_text: str) -> tuple[Path, Layout]:
    """(the folder paths are relative to, the splits and classes); classes are the train labels, sorted."""
    folder, rows = read_rows(path_text)
    classes = sorted({label for _, label, split in rows if split == "train"})
    if len(classes) < 2:
        raise UsageError(f"{path_text}: {len(classes)} class(es) among the train rows; need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    layout = Layout(splits={}, classes=classes)
    for name, label, split in rows:
        if label not in index:
            layout.skipped.append((name, f"class '{label}' has no train rows"))
        else:
            layout.splits.setdefault(split, []).append((name, index[label]))
    return folder, layout


def content_key(path_text: str, folder: Path, layout: Layout) -> str:
    """A hash of the list and of each listed file's size and modification time (for the decoded-image cache)."""
    h = hashlib.sha256(Path(path_text).expanduser().read_bytes())
    for items in layout.splits.values():
        for name, _ in items:
            try:
                st = os.stat(folder / name)
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()[:24]
