"""Models that take seconds to build (an int8 model calibrated on real images) kept on disk, so that a second start
loads them instead of building them again. A cached model is keyed by the artifact's bytes and by everything else
that shapes it (backend, calibration images, quantization scheme, library versions): change any and it is rebuilt.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cnnmode.artifact import Artifact
from cnnmode.files import file_sha256


def user_cache_dir() -> Path:
    """The per-user cache folder: $XDG_CACHE_HOME/cnnmode, %LOCALAPPDATA%/cnnmode on Windows, ~/.cache/cnnmode."""
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or Path.home() / ".cache"
    return Path(base) / "cnnmode"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def cached_path(art: Artifact, backend: str, *shaped_by: str, suffix: str = "") -> Path | None:
    """Where `backend`'s model of `art` lives: `cache/` beside the artifact (a run folder's), or the user's cache
    folder where that is read-only; None for an artifact that was not loaded from a file."""
    if art.path is None:
        return None
    key = hashlib.sha256("\0".join([file_sha256(art.path), backend, *shaped_by]).encode()).hexdigest()[:20]
    for folder in (art.path.parent / "cache", user_cache_dir()):
        if _writable(folder):
            return folder / f"{backend}-{key}{suffix}"
    return None
