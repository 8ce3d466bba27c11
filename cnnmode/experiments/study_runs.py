"""Runs that experiments own: start, resume or skip one run folder, so a rerun study completes what is missing."""
from __future__ import annotations

from pathlib import Path

from cnnmode.config import Config, flatten, load_yaml_text
from cnnmode.errors import UsageError
from cnnmode.rundir import RunDir
from cnnmode.workflows.train import train

IGNORED = ("run.", "recipe", "description")  # keys that may differ between a run and its rerun


def run_folder(cfg: Config) -> Path:
    """The folder a config's run writes to (run.dir/run.name)."""
    return Path(cfg.run.dir) / cfg.run.name


def _compared(cfg_dict: dict) -> dict:
    return {k: v for k, v in flatten(cfg_dict).items() if not k.startswith(IGNORED)}


def check_same_config(run_dir: Path, cfg: Config) -> None:
    """Refuse to reuse `run_dir` when it holds a run of a different configuration."""
    saved = RunDir(run_dir).config
    if not saved.exists():
        return
    old, new = _compared(load_yaml_text(saved.read_text()) or {}), _compared(cfg.to_dict())
    defaults = _compared(Config().to_dict())  # keys added since that run was made have their default there
    changed = sorted(k for k in new if old.get(k, defaults.get(k)) != new[k])
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in changed[:4])
        raise UsageError(f"{run_dir} holds a run with a different config ({diffs}); rerun with the same "
                         "settings to complete it, or choose another output folder")


def check_planned(configs: list[Config]) -> None:
    """Before any run starts: refuse when a planned run's folder holds a run of a different configuration."""
    for cfg in configs:
        check_same_config(run_folder(cfg), cfg)


def complete_run(cfg: Config, quiet: bool = False) -> tuple[str, Path]:
    """Make sure the run for `cfg` is finished: ("finished", dir) if it already was, ("resumed", dir) if it
    continued from its last.pt, ("trained", dir) if it started fresh. Callers check the folders first with
    `check_planned`. Errors propagate."""
    run_dir = run_folder(cfg)
    if RunDir(run_dir).is_finished():
        return "finished", run_dir
    if RunDir(run_dir).is_resumable():
        train(resume=run_dir, quiet=quiet)
        return "resumed", run_dir
    train(cfg, quiet=quiet)
    return "trained", run_dir
