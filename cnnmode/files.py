"""Atomic file writes: a temp file in the same folder, then a rename, so readers never see half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """torch.save to `path` atomically."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: Path, text: str) -> Path:
    """Write text to `path` atomically."""
    return _atomic(path, lambda tmp: Path(tmp).write_text(text))


def torch_load(path: Path) -> Any:
    """torch.load restricted to tensors and plain types (weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)
