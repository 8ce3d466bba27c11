"""What a run tells the person watching: a rich progress bar, one line per epoch, a final table, and train.log."""
from __future__ import annotations

import logging
import logging.handlers
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

log = logging.getLogger("cnnmode")


class Reporter:
    """Prints to the console (unless quiet) and always to `<run>/train.log`.

    Lines logged before the log file exists (the run folder is made only once the run can start) are held
    and written at the top of the file by `attach_log`.
    """

    def __init__(self, quiet: bool = False, silent: bool = False) -> None:
        self.console = Console(highlight=False, quiet=silent)  # silent: a data-parallel rank other than 0
        self.quiet = quiet or silent
        self._file: logging.Handler | None = None
        self._held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        log.setLevel(logging.INFO)
        log.addHandler(self._held)

    def attach_log(self, path: Path) -> None:
        """Start (or continue) the run's log file, beginning with the lines held so far."""
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._held.setTarget(self._file)
        self._release_held()
        log.addHandler(self._file)

    def _release_held(self) -> None:
        log.removeHandler(self._held)
        self._held.close()  # flushes into the target, if any

    def close(self) -> None:
        """Detach from the log (the held lines are dropped when no log file was attached)."""
        self._release_held()
        if self._file is not None:
            log.removeHandler(self._file)
            self._file.close()
            self._file = None

    def info(self, message: str, style: str = "") -> None:
        """One line to the log and to the console (even in quiet mode: quiet only drops the bars)."""
        log.info(message)
        self.console.print(message, style=style or None, markup=False, highlight=False, soft_wrap=True)

    def log_only(self, message: str) -> None:
        """A line for train.log only (details too long for the console)."""
        log.warning(message)

    def warn(self, message: str) -> None:
        log.warning(message)
        self.console.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)

    @contextmanager
    def epoch_bar(self, epoch: int, epochs: int, steps: int, start: int = 0):
        """A progress bar for one epoch (from step `start` when resumed mid-epoch); yields a callback(step, stats)."""
        if self.quiet or not self.console.is_terminal:
            yield lambda step, stats: None
            return
        progress = Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console,
                            transient=True)
        task = progress.add_task("train", total=steps, completed=start, stats="")
        with progress:
            yield lambda step, s: progress.update(task, completed=step, stats=(
                f"loss {s['loss']:.3f}  acc {100 * s['acc']:.1f}%  lr {s['lr']:.2e}  {s['img_s']:.0f} img/s"))

    def table(self, title: str, rows: list[tuple[str, str]]) -> None:
        """A two-column summary table."""
        table = Table(title=title, show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for k, v in rows:
            table.add_row(k, v)
            log.info("%s: %s", k, v)
        self.console.print(table)
