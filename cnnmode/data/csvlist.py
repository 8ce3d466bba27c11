"""A CSV list as a data source: `path,label[,split]` rows (a header row naming them is optional), paths relative
to the CSV file's folder or absolute, the split `train` when not given. `cnnmode data split --csv` writes one.

A multi-label list holds several class names in the label cell, separated by `;` (`cat;dog`); an empty cell is an
image with no label. Such cells make the list multi-label (`data.task=auto`), or `data.task=multilabel` says so."""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from cnnmode.data.labels import SEPARATOR, split_cell
from cnnmode.data.source_layout import SPLIT_NAMES, Layout
from cnnmode.errors import UsageError


def is_list(path: str) -> bool:
    """True for .csv paths."""
    return str(path).lower().endswith(".csv")


def read_rows(path_text: str) -> tuple[Path, list[tuple[str, str, str]]]:
    """(the CSV's folder, (path, label, split) rows), each row checked."""
    path = Path(path_text).expanduser()
    try:
        # -sig: a spreadsheet's byte-order mark; surrogateescape: file names that are not UTF-8 come back as they are
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    except FileNotFoundError:
        raise UsageError(f"data.path '{path_text}' does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"cannot read the CSV list {path_text}: {e}") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["path", "label"], ["path", "labels"]):
        rows = rows[1:]
    out = []
    for n, r in enumerate(rows, 1):
        if len(r) not in (2, 3):
            raise UsageError(f"{path_text} row {n}: expected path,label[,split], got {len(r)} columns")
        split = r[2].strip().lower() if len(r) == 3 and r[2].strip() else "train"
        label = r[1].strip()
        for name in split_cell(label):
            if name in (".", "..") or "/" in name or "\\" in name:
                raise UsageError(f"{path_text} row {n}: label {name!r} must be a plain class name (no / or \\, not "
                                 ". or ..)")
        if split not in SPLIT_NAMES:
            raise UsageError(f"{path_text} row {n}: split '{r[2]}' is not one of {', '.join(SPLIT_NAMES)}")
        out.append((r[0].strip(), label, split))
    if not out:
        raise UsageError(f"{path_text} lists no images; expected path,label[,split] rows")
    return path.parent, out


def is_multilabel(rows: list[tuple[str, str, str]], task: str, path_text: str) -> bool:
    """Whether the list is multi-label: `task` multilabel, or auto and some label cell holds `;` or is empty."""
    multi = any(SEPARATOR in label or not label for _, label, _ in rows)
    if task == "single" and multi:
        row = next(n for n, (_, label, _) in enumerate(rows, 1) if SEPARATOR in label or not label)
        raise UsageError(f"{path_text} row {row}: data.task=single needs exactly one class name per row; use "
                         "data.task=multilabel (or auto) for label sets")
    return task == "multilabel" or multi


def list_layout(path_text: str, task: str = "auto") -> tuple[Path, Layout]:
    """(the folder paths are relative to, the splits and classes); classes are the train labels, sorted. With
    label sets, every class named outside train must also appear in train (a set with one label dropped would
    teach the wrong answer)."""
    folder, rows = read_rows(path_text)
    if is_multilabel(rows, task, path_text):
        return folder, _multilabel_layout(rows, path_text)
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


def _multilabel_layout(rows: list[tuple[str, str, str]], path_text: str) -> Layout:
    classes = sorted({name for _, label, split in rows if split == "train" for name in split_cell(label)})
    if len(classes) < 2:
        raise UsageError(f"{path_text}: {len(classes)} label(s) among the train rows; need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    layout = Layout(splits={}, classes=classes, multilabel=True)
    for n, (name, label, split) in enumerate(rows, 1):
        unknown = [c for c in split_cell(label) if c not in index]
        if unknown:
            raise UsageError(f"{path_text} row {n}: label {unknown[0]!r} is not among the train labels "
                             f"({', '.join(classes)})")
        layout.splits.setdefault(split, []).append((name, tuple(index[c] for c in split_cell(label))))
    return layout


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
