"""`cnnmode search`: an Optuna study over config keys (TPE sampler, pruning on per-epoch validation accuracy).

The study lives in an Optuna storage: a SQLite file in the study folder by default, or a database server
(`postgresql://...`) that many `cnnmode search --study NAME --storage URL [--jobs J]` processes on many machines
share; there, --trials is the study's total. `run_search` (search_workers.py) runs a search; this
module holds the space, the trial and the results.
A space file looks like:

    base: default                 # recipe name or config YAML (optional)
    fixed: {train.epochs: 4}      # keys every trial uses (optional)
    params:
      optim.lr: {type: float, low: 0.01, high: 1.0, log: true}
      train.label_smoothing: {type: float, low: 0.0, high: 0.3}
      model.width: {type: int, low: 32, high: 96, step: 32}
      optim.name: {type: categorical, choices: [sgd, adamw]}
"""
from __future__ import annotations


import json
import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from cnnmode.config import Config, resolve_config, dump_yaml, parse_override, read_yaml, set_key, validate
from cnnmode.errors import UsageError
from cnnmode.experiments.compare import csv_table
from cnnmode.files import atomic_write_text
from cnnmode.workflows.tracking import parent_run
from cnnmode.rundir import RunDir

PARAM_TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "halving", "none")
SERVER_SCHEMES = "postgresql://USER@HOST/DB or mysql://USER@HOST/DB"
HEARTBEAT = (30, 90)  # seconds between a running trial's heartbeats; seconds of silence before it counts as dead


@dataclass
class Space:
    """What a search varies (`params`: key → spec) and what it keeps (`base`, `fixed`)."""
    params: dict[str, dict[str, Any]]
    base: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    name: str = "search"


def _check_param(key: str, spec: Any, source: str) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
        raise UsageError(f"{source}: params.{key} needs `type:` one of {', '.join(PARAM_TYPES)}")
    needed = ("choices",) if spec["type"] == "categorical" else ("low", "high")
    missing = [k for k in needed if k not in spec]
    if missing:
        raise UsageError(f"{source}: params.{key} ({spec['type']}) needs {', '.join(missing)}")
    if spec["type"] != "categorical" and not spec["low"] < spec["high"]:
        raise UsageError(f"{source}: params.{key} needs low < high")


def load_space(path: str | Path) -> Space:
    """Read and check a space YAML file."""
    tree = read_yaml(Path(path))
    params = tree.get("params")
    if not isinstance(params, dict) or not params:
        raise UsageError(f"{path}: a search space needs `params:` mapping config keys to specs, e.g. "
                         "optim.lr: {type: float, low: 0.01, high: 1.0, log: true}")
    for key, spec in params.items():
        _check_param(key, spec, str(path))
    fixed = tree.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise UsageError(f"{path}: `fixed:` must map config keys to values")
    base = tree.get("base")
    if base and not Path(base).is_absolute() and (Path(path).parent / base).is_file():
        base = str(Path(path).parent / base)  # a config file beside the space file
    return Space(params, base, fixed, Path(path).stem)


def suggest(trial, space: Space) -> dict[str, Any]:
    """The trial's value for every parameter of the space."""
    values = {}
    for key, spec in space.params.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=bool(spec.get("log", False)), step=spec.get("step"))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                            log=bool(spec.get("log", False)))
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def trial_config(space: Space, values: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
                 run_keys: dict[str, Any] | None = None) -> Config:
    """Base → fixed keys → command-line overrides → the trial's values; always with a validation split."""
    cfg = resolve_config(space.base or "default", values=space.fixed)
    for text in overrides:
        set_key(cfg, *parse_override(text))
    for key, value in (values | (run_keys or {})).items():
        set_key(cfg, key, value)
    if cfg.data.val_split == 0 and not cfg.data.folds:
        set_key(cfg, "data.val_split", 0.1)  # a search selects on validation accuracy: never on the test split
    validate(cfg)
    return cfg


def check_space(space: Space, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a config for every categorical choice and both ends of every range, so a bad space fails before the
    first trial; returns the config of the first values."""
    import optuna

    for key, spec in space.params.items():
        if spec["type"] != "categorical" and spec.get("log") and (spec["low"] <= 0 or spec.get("step")):
            raise UsageError(f"params.{key}: a log range needs low > 0 and no step")
        for value in (spec["choices"] if spec["type"] == "categorical" else (spec["low"], spec["high"])):
            trial_config(space, _first_values(space) | {key: value}, overrides)
    try:  # Optuna's own checks of the ranges
        suggest(optuna.trial.FixedTrial(_first_values(space)), space)
    except ValueError as e:
        raise UsageError(f"search space: {e}") from None
    return trial_config(space, _first_values(space), overrides)


def _first_values(space: Space) -> dict[str, Any]:
    return {k: (s["choices"][0] if s["type"] == "categorical" else s["low"]) for k, s in space.params.items()}


def make_pruner(name: str):
    """Optuna pruner by name: median (from epoch 2 on, stop a trial below the median of earlier trials at the same
    epoch, once 2 trials have finished), halving (successive halving), none."""
    import optuna

    if name not in PRUNERS:
        raise UsageError(f"unknown pruner '{name}'; choose one of: {', '.join(PRUNERS)}")
    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
            "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
            "none": optuna.pruners.NopPruner}[name]()


def connect(storage: str, heartbeat: tuple[int, int] = HEARTBEAT, kind: type | None = None):
    """An Optuna RDBStorage (or its subclass `kind`) for the URL, with a heartbeat of (interval, grace period) in
    seconds: a trial silent for the grace period is marked failed by the next process to look."""
    import optuna

    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return (kind or optuna.storages.RDBStorage)(driver_url(storage), heartbeat_interval=heartbeat[0],
                                                        grace_period=heartbeat[1])

    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    try:
        return with_retries(make)
    except ImportError as e:  # a server URL without its driver
        missing = getattr(e.__cause__, "name", None) or e.name or "its driver"
        raise UsageError(f"storage {shown_url(storage)} needs the database driver module '{missing}' (for "
                         "PostgreSQL: pip install psycopg2-binary)") from None
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise UsageError(f"storage {shown_url(storage)} is not a database URL this can open; give sqlite:///FILE, "
                         f"{SERVER_SCHEMES}") from None
    except DBAPIError as e:
        reason = str(e.orig or e).strip().splitlines()[0]
        raise UsageError(f"storage {shown_url(storage)} cannot be opened: {reason}") from None


def driver_url(storage: str) -> str:
    """postgresql:// → postgresql+psycopg2:// when psycopg2 is installed and psycopg (3, SQLAlchemy 2.1's default
    PostgreSQL driver) is not; any other URL as it is."""
    from importlib.util import find_spec

    if storage.startswith("postgresql://") and not find_spec("psycopg") and find_spec("psycopg2"):
        return "postgresql+psycopg2://" + storage[len("postgresql://"):]
    return storage


def with_retries(make: Callable[[], Any], tries: int = 6) -> Any:
    """make(), tried again after a database error: processes starting together race to create the tables of a new
    database, and SQLite answers 'database is locked' to a second writer."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(tries):
        try:
            return make()
        except DBAPIError as e:
            if attempt == tries - 1 or not _a_race(e):
                raise
            time.sleep(0.5 + attempt)


def _a_race(error: Exception) -> bool:
    """Whether a database error is one that trying again can cure (a lock, or tables another process created
    first); a refused connection or a missing file is not, and is reported at once."""
    from sqlalchemy.exc import IntegrityError

    text = str(getattr(error, "orig", None) or error).lower()
    return isinstance(error, IntegrityError) or any(w in text for w in ("locked", "already exists", "duplicate"))


def shown_url(storage: str) -> str:
    """The storage URL with its password masked, for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: shown as given
        return storage


def make_sampler(seed: int | None = None):
    """The TPE sampler every process of a study uses."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)


def open_study(name: str, storage: str, pruner, seed: int | None = None, heartbeat: tuple[int, int] = HEARTBEAT):
    """Create or join the study `name` in `storage` (an RDB URL), maximising validation accuracy.

    A heartbeat marks trials of killed processes as failed, so every process sees the true state.
    """
    import optuna

    rdb = connect(storage, heartbeat)
    return with_retries(lambda: optuna.create_study(study_name=name, storage=rdb, direction="maximize",
                                                    load_if_exists=True, sampler=make_sampler(seed), pruner=pruner))


def objective(space: Space, study_dir: Path, overrides: list[str] | tuple[str, ...], quiet: bool):
    """The function Optuna calls per trial: one fresh training run in study_dir/trial-NNN, reporting every epoch."""
    import optuna

    from cnnmode.workflows.train import train

    def run(trial: optuna.Trial) -> float:
        run_dir = study_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who runs it, e.g. to stop it

        def report(epoch: int, val: dict) -> None:
            trial.report(val.get("map", val["accuracy"]), epoch)  # label sets: validation mAP
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation score {val.get('map', val['accuracy']):.4f} at epoch {epoch}")

        try:
            cfg = trial_config(space, suggest(trial, space), overrides,
                               {"run.dir": str(study_dir), "run.name": run_dir.name})
            train(cfg, quiet=quiet, on_epoch=report)  # refuses a folder that already holds a run
        except optuna.TrialPruned:
            raise
        except Exception as e:  # Optuna marks the trial failed; keep the reason where people look
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
            raise
        metrics = json.loads(RunDir(run_dir).metrics.read_text())
        trial.set_user_attr("test_acc", metrics["test"].get("map", metrics["test"]["accuracy"]))
        trial.set_user_attr("train_time_s", metrics["train_time_s"])
        return metrics["val"].get("map", metrics["val"].get("accuracy"))  # label sets: val mAP

    return run


def check_strays(study, study_dir: Path, storage: str) -> None:
    """Refuse a study folder holding trial folders that the study does not know (another study's)."""
    known = {t.user_attrs.get("run_dir") for t in study.trials}
    strays = [p for p in study_dir.glob("trial-*") if str(p) not in known]
    if strays:
        raise UsageError(f"{study_dir} holds trial folders that study '{study.study_name}' in {shown_url(storage)} "
                         f"does not know ({strays[0].name}, ...); give this study its own --out folder")


def after_trial(space: Space, study_dir: Path, log: Callable[[str], None]) -> Callable:
    """The Optuna callback after each trial: one line, and the tables kept current (an interrupted search still
    has them)."""
    def callback(study, trial) -> None:
        log(_trial_line(trial))
        write_tables(study, space, study_dir)

    return callback


def tracked(probe: Config, study_dir: Path, name: str):
    """The MLflow parent run (when tracked) that the trials' runs nest under."""
    return parent_run(replace(probe, run=replace(probe.run, dir=str(study_dir))), f"search-{name}")


def _trial_line(t) -> str:
    value = f"val acc {100 * t.value:.2f}%" if t.value is not None else ""
    note = t.user_attrs.get("error", "") if t.state.name == "FAIL" else ""
    return f"trial {t.number}: {t.state.name.lower()} {value} {note[:200]}".rstrip()


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, validation accuracy (the best epoch's when complete, the last reported
    when pruned), test accuracy, parameters, duration, run folder and error."""
    rows = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "val_acc": t.value,
                     "test_acc": t.user_attrs.get("test_acc"), "epochs": len(t.intermediate_values),
                     **t.params, "duration_s": round(duration, 1) if duration is not None else None,
                     "run_dir": t.user_attrs.get("run_dir", ""), "error": t.user_attrs.get("error", "")})
    return rows


def write_tables(study, space: Space, study_dir: Path) -> list[dict]:
    """trials.csv and trials.md; returns the rows."""
    rows = trial_rows(study)
    columns = ["number", "state", "val_acc", "test_acc", "epochs", *space.params, "duration_s", "run_dir", "error"]
    atomic_write_text(study_dir / "trials.csv", csv_table(rows, columns))
    atomic_write_text(study_dir / "trials.md", _markdown(rows, columns))
    return rows


def write_results(study, space: Space, study_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """trials.csv, trials.md, best.yaml (a config for `cnnmode train --config`) and the Optuna plots."""
    rows = write_tables(study, space, study_dir)
    result = {"study": study.study_name, "dir": str(study_dir), "trials": len(rows),
              "states": {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})}}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        cfg = trial_config(space, best.params, overrides)
        cfg.description = (f"best of search '{study.study_name}': trial {best.number}, validation accuracy "
                           f"{100 * best.value:.2f}%")
        atomic_write_text(study_dir / "best.yaml", dump_yaml(cfg))
        result |= {"best_trial": best.number, "best_val_acc": best.value, "best_params": best.params,
                   "best_config": str(study_dir / "best.yaml")}
    result["plots"] = write_plots(study, study_dir)
    atomic_write_text(study_dir / "search.json", json.dumps(result, indent=2, default=str))
    return result


def _markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(key, value):
        if value is None:
            return ""
        if key in ("val_acc", "test_acc"):
            return f"{100 * value:.2f}%"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_plots(study, study_dir: Path) -> list[str]:
    """Optimization history, parameter importances and parallel coordinates as PNG (matplotlib) and one HTML page
    (plotly); a plot that needs more finished trials than there are is left out."""
    import optuna.visualization as pv
    import optuna.visualization.matplotlib as pm

    from cnnmode.figures import save_fig

    written, figures = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API and few-trials notices
        for name in ("optimization_history", "param_importances", "parallel_coordinate"):
            try:
                ax = getattr(pm, f"plot_{name}")(study)
                ax = ax.flat[0] if hasattr(ax, "flat") else ax
                written.append(str(save_fig(ax.figure, study_dir / f"{name}.png")))
                figures.append(getattr(pv, f"plot_{name}")(study))
            except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances need 2+ finished trials
                continue
    if figures:
        parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
        page = f"<html><head><meta charset='utf-8'><title>{study.study_name}</title></head><body>" + \
            "".join(parts) + "</body></html>"
        written.append(str(atomic_write_text(study_dir / "search.html", page)))
    return written
