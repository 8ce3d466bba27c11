"""A run folder's file names, and what a verb was pointed at: a run folder or a model file.

Every other module asks a `RunDir` for a path instead of spelling out `config.yaml`, `model.pt` and the rest,
and `resolve_target` is the one place that turns "a run folder or an artifact file" into paths.
"""
from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import filelock

from cnnmode.errors import UsageError
from cnnmode.pretrained import shipped_names, shipped_path


@dataclass(frozen=True)
class RunDir:
    """The files of one run folder (see docs/runs.md, the run-folder contract)."""
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def checkpoints(self) -> Path:
        """Epoch checkpoints kept by train.keep_checkpoints / train.save_every: checkpoints/epoch-NNNN.pt."""
        return self.path / "checkpoints"

    @property
    def model_card(self) -> Path:
        return self.path / "MODEL_CARD.md"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def eval_metrics(self) -> Path:
        return self.eval / "metrics.json"

    @property
    def heldout(self) -> Path:
        """The held-out images' predictions (out-of-fold in a cv study), that `data labels` ranks."""
        return self.eval / "heldout.npz"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def history_rows(self) -> list[dict]:
        """history.csv's rows (one per epoch); none for a run without one or with one that cannot be read."""
        try:
            return list(csv.DictReader(io.StringIO(self.history.read_text())))
        except (OSError, ValueError, csv.Error):
            return []

    def is_run(self) -> bool:
        """True when the folder holds a run's config (it remembers its data)."""
        return self.config.is_file()

    def is_resumable(self) -> bool:
        """True when the folder holds a checkpoint to resume from."""
        return self.last.is_file()

    def is_finished(self) -> bool:
        """True when a run wrote everything: metrics.json, the model.pt artifact and, last of all, report.html."""
        return all(p.exists() for p in (self.metrics, self.model, self.report))

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temp files of writes that a killed process never finished (`.NAME.RANDOM.tmp`, see files.py).
        Call it only while holding the folder's lock, so that no live writer owns them."""
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Make the folder and hold an exclusive OS lock on it (flock on POSIX, msvcrt on Windows, through
        filelock; released on exit, and by the OS when the process dies); a second process that wants the same
        folder gets a one-line error instead of mixing two runs."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            raise UsageError(f"{self} is in use by another cnnmode process; wait for it to end or pick "
                             "another run.name") from None
        try:
            yield
        finally:
            lock.release()

    def in_use(self) -> bool:
        """True while a process holds the folder's lock (a run in progress)."""
        if not (self.path / ".lock").exists():
            return False
        lock = self._lock()
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return True
        except OSError:  # e.g. a read-only copy of a run folder
            return False
        lock.release()
        return False

    def _lock(self) -> filelock.FileLock:
        # a fresh lock object each time (not filelock's per-path singleton), so this process's own lock counts
        # as "in use" too
        return filelock.FileLock(self.path / ".lock", thread_local=False)

    def __str__(self) -> str:
        return str(self.path)


def new_run_name(recipe: str, model: str) -> str:
    """The default run folder name: the recipe (or model, `tv:` written `tv-`) and the start time."""
    return f"{(recipe or model).replace(':', '-')}-{datetime.now():%Y%m%d-%H%M%S}"


@dataclass(frozen=True)
class Target:
    """What a verb was pointed at: the model file to load, and the run folder when it was given one."""
    file: Path
    run: RunDir | None = None
    shipped: str | None = None  # the name of a model that ships with the package

    @property
    def home(self) -> Path:
        """Where a verb's outputs go by default: the run folder, else the model file's folder; for a shipped model
        (installed with the package) `NAME-outputs` in the working folder."""
        if self.shipped:
            return Path.cwd() / f"{self.shipped}-outputs"
        return self.run.path if self.run is not None else self.file.parent


def resolve_target(target: str | Path) -> Target:
    """A run folder (its model.pt), a model file (an artifact, or an exported .onnx/.ts), or the name of a model
    that ships with the package (`cifar10`; a file or folder of that name comes first)."""
    path = Path(target)
    if path.is_dir():
        run = RunDir(path)
        if not run.model.is_file():
            raise UsageError(f"no artifact at {run.model} (is {path} a finished run folder?)")
        return Target(run.model, run if run.is_run() else None)
    if not path.exists() and (shipped := shipped_path(str(target))) is not None:
        return Target(shipped, shipped=str(target))
    if not path.is_file():
        raise UsageError(f"no model at {path}: give a run folder, a model.pt / .onnx / .ts file, or a shipped "
                         f"model ({', '.join(shipped_names()) or 'none installed'})")
    return Target(path)
