"""Models that ship with the package, addressed by name: `cnnmode predict cifar10 photo.jpg` works before any
training.

Each is an artifact beside this module, `NAME.pt` (weights stored in bf16 to halve the download, loaded into the
fp32 model), with `NAME.md`, its model card (the command, seed, CPU and accuracy), and `NAME.json`, what the card
states in a form `cnnmode models --pretrained` prints and a test checks. `scripts/ship_model.py` writes all three
from a finished run folder.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shipped_names() -> list[str]:
    """The names of the shipped models (NAME.pt; not companions such as NAME.unknowns.pt)."""
    return sorted(p.stem for p in HERE.glob("*.pt") if "." not in p.stem)


def shipped_path(name: str) -> Path | None:
    """The artifact file of a shipped model, or None when no shipped model has that name."""
    return HERE / f"{name}.pt" if name in shipped_names() else None


def shipped_info(name: str) -> dict:
    """What a shipped model's card states: model, classes, test accuracy, the command that trained it, ..."""
    return json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))
