"""Atomic file writes: a temp file in the same folder, then a rename, so readers never see half a file."""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import warnings
import shutil
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from cnnmode.errors import RunError, UsageError


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
    except BaseException as e:
        full = _disk_full(e, path.parent)  # asked before the temp file goes and frees its space
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise RunError(f"no space left on {path.parent} while writing {path.name}; free some space and run "
                           "again (a run resumes from its last checkpoint)") from None
        raise
    return path


def _disk_full(error: BaseException, folder: Path) -> bool:
    """True when a failed write ran out of disk: ENOSPC, or torch.save's own error on a full disk."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < 2**20
        except OSError:
            return False
    return False


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """torch.save to `path` atomically."""
    import torch  # here, not at the top: the command line imports this module and must start without torch

    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call `write(temp_path)`, then move the finished file to `path` (a reader never sees half a file)."""
    return _atomic(path, write)


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to build in; moved to `out` when the block succeeds, removed when it fails.
    `out` must not exist, or be an empty folder (a UsageError otherwise)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the finished folder gets the mode any new folder would
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """Write text to `path` atomically, as UTF-8 (file names that are not, e.g. Latin-1 bytes, as escapes)."""
    return _atomic(path, lambda tmp: Path(tmp).write_text(printable(text), encoding="utf-8"))


def printable(text: str) -> str:
    """`text` with any undecodable file-name bytes (Python's surrogate escapes) written as backslash escapes, so
    that consoles, CSV files and plot titles can show it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def torch_load(path: Path) -> Any:
    """torch.load restricted to tensors and plain types (weights_only=True). A file holding other Python objects
    (a foreign or malicious pickle) is refused, never loaded unsafely; a damaged file is named in one line."""
    import torch

    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UsageError(f"{path} is not a safe CNN Mode file: it holds Python objects besides tensors and plain "
                         "values, and such files are never loaded") from None
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise RunError(f"{path} is truncated or damaged and cannot be read ({reason})") from None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 4 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
