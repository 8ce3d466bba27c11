"""`cnnmode cv`: stratified K-fold cross-validation on the training split, one resumable run per fold."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable

from cnnmode.config import Config, resolve_config
from cnnmode.errors import RunError, UsageError
from cnnmode.experiments.compare import csv_table
from cnnmode.experiments.study_runs import check_planned, complete_run
from cnnmode.workflows.tracking import parent_run
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir

FOLD_COLUMNS = ["fold", "best_val_acc", "best_epoch", "test_acc", "train_time_s", "run_dir"]


def plan_folds(folds: int, base: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               out: str | Path | None = None) -> tuple[Path, list[Config]]:
    """The cv folder and one validated config per fold (fold i validates on the i-th stratified fold)."""
    if folds < 2:
        raise UsageError(f"--folds must be >= 2 (got {folds})")
    base = base or "default"
    base_cfg = resolve_config(base, overrides)
    cv_dir = Path(out) if out else Path(base_cfg.run.dir) / f"cv-{base_cfg.recipe or base_cfg.model.name}-k{folds}"
    configs = [resolve_config(base, overrides, {"data.folds": folds, "data.fold": i, "run.dir": str(cv_dir),
                                                  "run.name": f"fold-{i}"}) for i in range(folds)]
    return cv_dir, configs


def fold_row(fold: int, run_dir: Path) -> dict:
    """Best validation accuracy (and the rest) of one finished fold's run folder; for label sets the figures are
    mAP (the one a multi-label run selects by)."""
    m = json.loads(RunDir(run_dir).metrics.read_text())
    val = m.get("val") or {}
    return {"fold": fold, "best_val_acc": val.get("map", val.get("accuracy")), "best_epoch": m.get("best_epoch"),
            "test_acc": m["test"].get("map", m["test"]["accuracy"]), "train_time_s": m.get("train_time_s"),
            "run_dir": str(run_dir)}


def _fold(i: int, folds: int, cfg, quiet: bool, log: Callable[[str], None]) -> dict:
    try:
        status, run_dir = complete_run(cfg, quiet=quiet)
    except Exception as e:
        raise RunError(f"fold {i} failed ({type(e).__name__}: {e}); rerun the same command to continue "
                       "from the finished folds") from None
    log(f"fold {i + 1}/{folds}: {'already finished, skipped' if status == 'finished' else status}")
    return fold_row(i, run_dir)


def run_cv(folds: int, base: str | None = None, overrides: list[str] | tuple[str, ...] = (),
           out: str | Path | None = None, quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train every fold (finished folds are skipped, interrupted ones resume) and write cv.json/.csv/.md."""
    cv_dir, configs = plan_folds(folds, base, overrides, out)
    check_planned(configs)
    rows = []
    with parent_run(configs[0], f"cv-{cv_dir.name}"):
        for i, cfg in enumerate(configs):
            rows.append(_fold(i, folds, cfg, quiet, log))
    accs = [r["best_val_acc"] for r in rows]

    result = {"folds": folds, "per_fold": rows, "mean_val_acc": statistics.fmean(accs),
              "std_val_acc": statistics.stdev(accs), "mean_test_acc": statistics.fmean(r["test_acc"] for r in rows),
              "dir": str(cv_dir)}
    atomic_write_text(cv_dir / "cv.json", json.dumps(result, indent=2))
    atomic_write_text(cv_dir / "cv.csv", csv_table(rows, FOLD_COLUMNS))
    atomic_write_text(cv_dir / "cv.md", markdown(result))
    return result


def markdown(result: dict) -> str:
    """The per-fold table with the mean ± std line."""
    lines = [f"# {result['folds']}-fold cross-validation\n", "| fold | best val acc | best epoch | test acc | "
             "train time |", "|---|---|---|---|---|"]
    lines += [f"| {r['fold']} | {100 * r['best_val_acc']:.2f}% | {r['best_epoch']} | {100 * r['test_acc']:.2f}% | "
              f"{r['train_time_s']:.1f} s |" for r in result["per_fold"]]
    lines.append(f"\nvalidation accuracy: **{100 * result['mean_val_acc']:.2f}% ± {100 * result['std_val_acc']:.2f}** "
                 f"(mean ± std over folds); test accuracy of the fold models: {100 * result['mean_test_acc']:.2f}% "
                 "mean\n")
    return "\n".join(lines)
