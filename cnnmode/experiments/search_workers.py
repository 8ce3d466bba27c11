"""A search that many processes share: `cnnmode search --jobs J`, or any search in a database server.

The process that creates the study enqueues its N trials as WAITING (their values are left to the sampler) and
then records `planned_trials=N`; every worker, here or on another machine, only ever takes WAITING trials (Optuna
claims one atomically in the database) and never adds a trial, so the study holds exactly N trials however many
workers race for the last one. A worker with no WAITING trial left waits while trials of others still run, until
they finish or their heartbeat goes silent (then they are marked failed), so the study ends with none running.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import optuna

from cnnmode.machine import usable_cores
from cnnmode.errors import CnnModeError, UsageError
from cnnmode.experiments import search
from cnnmode.experiments.options import SearchOptions

PLAN_ATTR = "planned_trials"
PLAN_WAIT_S = 60.0  # how long a joining process waits for the creator to finish enqueuing
SERVER_SCHEMES = search.SERVER_SCHEMES


class QueueEmpty(Exception):
    """No WAITING trial left to take (raised instead of adding a trial beyond the planned ones)."""


class QueueStorage(optuna.storages.RDBStorage):
    """An RDBStorage that adds trials only from a template (enqueue_trial), never a fresh one (Study.ask when the
    queue is empty): the guarantee that a shared study never holds more than its planned trials."""

    def _create_new_trial(self, study_id: int, template_trial=None):
        if template_trial is None:
            raise QueueEmpty()
        return super()._create_new_trial(study_id, template_trial)


@dataclass(frozen=True)
class Job:
    """What a worker process needs to work on the shared study (picklable, for the 'spawn' start method)."""
    space_file: str
    name: str
    storage: str
    study_dir: str
    overrides: tuple[str, ...]
    pruner: str
    seed: int | None
    quiet: bool
    trials: int
    heartbeat: tuple[int, int]
    deadline: float | None  # time.time() after which no trial starts
    index: int = 0
    threads: int = 1


def run_search(options: SearchOptions, overrides: list[str] | tuple[str, ...] = (), quiet: bool = False,
               log: Callable[[str], None] = print, heartbeat: tuple[int, int] = search.HEARTBEAT) -> dict:
    """Run the search, then write the results (trials.csv/.md, best.yaml, search.json, plots).

    With the default SQLite file and no `jobs`, this process runs `trials` trials of the study (joining it if it
    exists). With `jobs` or a database server storage (postgresql://, mysql://), `trials` is the study's total,
    shared by `jobs` worker processes here (or this process alone) and by the same command on other machines.
    Trials that raise are marked failed and the study continues; pruned trials are marked pruned.
    """
    space_file, trials, storage, study = options.space, options.trials, options.storage, options.study
    jobs, timeout, pruner, out, seed = options.jobs, options.timeout, options.pruner, options.out, options.seed
    space = search.load_space(space_file)
    name = study or space.name
    probe = search.check_space(space, overrides)  # a bad key or choice fails here, before any trial
    study_dir = Path(out) if out else Path(probe.run.dir) / "search" / name
    storage = storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    shared = check_jobs(trials, jobs, storage, heartbeat)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with new_folder_removed_on_failure(study_dir):
        opened = (open_queue(name, storage, search.make_pruner(pruner), seed, trials, heartbeat, log) if shared
                  else search.open_study(name, storage, search.make_pruner(pruner), seed, heartbeat))
    search.check_strays(opened, study_dir, storage)
    if shared:
        run_shared(opened, Job(str(space_file), name, storage, str(study_dir), tuple(overrides), pruner, seed, quiet,
                               trials, heartbeat, None if timeout is None else time.time() + timeout), jobs, log)
    else:
        log(f"study '{name}' in {search.shown_url(storage)}: {len(opened.trials)} trial(s) so far; "
            f"running {trials} more")
        with search.tracked(probe, study_dir, name):
            opened.optimize(search.objective(space, study_dir, overrides, quiet), n_trials=trials, timeout=timeout,
                            catch=(Exception,), callbacks=[search.after_trial(space, study_dir, log)])
    return search.write_results(opened, space, study_dir, overrides)


@contextmanager
def new_folder_removed_on_failure(folder: Path) -> Iterator[None]:
    """Make `folder` for the block; if the block fails, remove it again when it did not exist before and is still
    empty (a storage that cannot be opened leaves no empty study folder behind)."""
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if not existed and not any(folder.iterdir()):
            folder.rmdir()
        raise


def check_jobs(trials: int, jobs: int | None, storage: str, heartbeat: tuple[int, int]) -> bool:
    """Check --trials, --jobs and the heartbeat against the storage; True when the study's trials are shared
    (--jobs, or a database server), False for the per-process trials of a SQLite file without --jobs."""
    if trials < 1:
        raise UsageError(f"--trials needs a number of trials of at least 1, not {trials}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs needs a number of worker processes of at least 1, not {jobs}")
    if not 0 < heartbeat[0] < heartbeat[1]:
        raise UsageError(f"heartbeat {heartbeat}: needs 0 < interval < grace period (seconds)")
    sqlite = storage.startswith("sqlite")
    if sqlite and (jobs or 1) > 1:
        raise UsageError(f"--jobs {jobs} needs a database server that takes concurrent writers: --storage "
                         f"{SERVER_SCHEMES} (SQLite only with --jobs 1)")
    return jobs is not None or not sqlite


def parse_heartbeat(text: str) -> tuple[int, int]:
    """'INTERVAL,GRACE' (seconds) → (interval, grace)."""
    try:
        interval, grace = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--heartbeat '{text}': needs INTERVAL,GRACE in whole seconds, e.g. 30,90") from None
    return interval, grace


def open_queue(name: str, storage: str, pruner, seed: int | None, trials: int, heartbeat: tuple[int, int],
               log: Callable[[str], None]) -> optuna.Study:
    """Create the study with `trials` WAITING trials, or join it once its creator has enqueued them all."""
    rdb = search.connect(storage, heartbeat, QueueStorage)
    sampler = search.make_sampler(seed)
    try:
        study = search.with_retries(lambda: optuna.create_study(
            study_name=name, storage=rdb, direction="maximize", load_if_exists=False, sampler=sampler,
            pruner=pruner))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner)
        planned = wait_for_plan(study, storage)
        if planned != trials:
            log(f"study '{name}' plans {planned} trials in all; --trials {trials} is not used")
        return study
    for _ in range(trials):
        study.enqueue_trial({})
    study.set_user_attr(PLAN_ATTR, trials)
    return study


def wait_for_plan(study: optuna.Study, storage: str, wait_s: float = PLAN_WAIT_S) -> int:
    """The study's planned number of trials, waiting up to wait_s for the process that created it to set it."""
    end = time.monotonic() + wait_s
    while True:
        planned = study.user_attrs.get(PLAN_ATTR)
        if planned is not None:
            return int(planned)
        where = f"study '{study.study_name}' in {search.shown_url(storage)}"
        if any(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            raise UsageError(f"{where} was made by a search whose every process ran its own --trials, not a shared "
                             "total; give --study a new name")
        if time.monotonic() > end:
            raise UsageError(f"{where} has had no planned total for {wait_s:.0f} s (did the process that created "
                             "it stop?); give --study a new name")
        time.sleep(0.5)


def states(study: optuna.Study) -> dict[str, int]:
    """How many trials of the study are in each state (WAITING, RUNNING, COMPLETE, ...)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def fail_stale(study: optuna.Study) -> None:
    """Mark failed the running trials whose heartbeat has been silent for the grace period."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def work_queue(study: optuna.Study, func: Callable, deadline: float | None, heartbeat: tuple[int, int],
               callbacks: list[Callable], log: Callable[[str], None]) -> None:
    """Run WAITING trials (Study.optimize: a heartbeat per trial, stale trials failed before each) until none is
    left; then wait while trials of others run, until they end or go stale. After `deadline`, start none."""
    waited_for: set[int] = set()
    while deadline is None or time.time() < deadline:
        try:
            study.optimize(func, timeout=None if deadline is None else max(0.0, deadline - time.time()),
                           catch=(Exception,), callbacks=callbacks)
            return  # the deadline passed
        except QueueEmpty:
            pass
        fail_stale(study)
        counts = states(study)
        if counts.get("WAITING"):
            continue  # a trial came free: take it
        running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        if not running:
            return
        if running - waited_for:
            log(f"no trial left to start; waiting for trial(s) {', '.join(map(str, sorted(running)))} of other "
                f"processes (a killed one's is marked failed after {heartbeat[1]} s without heartbeat)")
            waited_for |= running
        time.sleep(min(heartbeat[0], 5))


def run_shared(study: optuna.Study, job: Job, jobs: int | None, log: Callable[[str], None]) -> None:
    """Work on the shared study: `jobs` worker processes here, or (without --jobs) this process itself."""
    counts = states(study)
    done = sum(n for s, n in counts.items() if s not in ("WAITING", "RUNNING"))
    log(f"study '{job.name}' in {search.shown_url(job.storage)}: {sum(counts.values())} trials planned in all, "
        f"{done} finished, {counts.get('WAITING', 0)} waiting, {counts.get('RUNNING', 0)} running"
        + (f"; {jobs} worker process(es)" if jobs else ""))
    if not counts.get("WAITING") and not counts.get("RUNNING"):
        return
    if jobs is None:
        work(study, job, log)
        return
    threads = max(1, usable_cores() // jobs)
    for index, code, pid in launch(job, jobs, threads, log):
        if code != 0:
            why = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            log(f"worker {index} (pid {pid}) {why}; a trial it left running is marked failed by the heartbeat "
                f"({job.heartbeat[1]} s of silence)")


def launch(job: Job, jobs: int, threads: int, log: Callable[[str], None]) -> list[tuple[int, int, int]]:
    """Start `jobs` worker processes ('spawn'), each with `threads` CPU threads, and wait for them all;
    (index, exit code, pid) of each. Interrupted, the workers are stopped (their trials go stale and fail)."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=worker_main, args=(replace(job, index=i, threads=threads),),
                             name=f"cnnmode-search-{i}") for i in range(jobs)]
    with environ(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)):  # before a worker imports torch
        for p in procs:
            p.start()
    log(f"workers: {', '.join(f'{i} (pid {p.pid})' for i, p in enumerate(procs))}; {threads} CPU thread(s) each")
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    return [(i, p.exitcode, p.pid) for i, p in enumerate(procs)]


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set for the block (inherited by processes started in it), restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def work(study: optuna.Study, job: Job, log: Callable[[str], None]) -> None:
    """This process's part of the shared study: its trials nested under the search's tracking run."""
    space = search.load_space(job.space_file)
    study_dir = Path(job.study_dir)
    with search.tracked(search.check_space(space, job.overrides), study_dir, job.name):
        work_queue(study, search.objective(space, study_dir, job.overrides, job.quiet), job.deadline, job.heartbeat,
                   [search.after_trial(space, study_dir, log)], log)


def worker_main(job: Job) -> None:
    """A worker process: its share of the CPU threads, then trials of the shared study until none is left."""
    import torch

    torch.set_num_threads(job.threads)
    seed = None if job.seed is None else job.seed + job.index  # workers sampling alike would repeat each other

    def log(line: str) -> None:
        print(f"worker {job.index}: {line}", flush=True)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_queue(job.name, job.storage, search.make_pruner(job.pruner), seed, job.trials, job.heartbeat,
                           lambda _: None)
        work(study, job, log)
    except CnnModeError as e:
        print(f"error: worker {job.index}: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
