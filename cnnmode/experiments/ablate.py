"""`cnnmode ablate`: a grid of runs that differ only in the studied keys, resumable, in one results table.

The studies themselves (built-in and YAML) are in `cnnmode.experiments.studies`.
"""
from __future__ import annotations

import hashlib
import json
import re
import statistics
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnmode.config import Config, resolve_config
from cnnmode.errors import UsageError
from cnnmode.figures import plt, save_fig
from cnnmode.experiments.compare import COLUMNS, csv_table, markdown_table, run_row
from cnnmode.experiments.study_runs import check_planned, complete_run, run_folder
from cnnmode.experiments.studies import Setting, resolve_study
from cnnmode.files import atomic_write_text
from cnnmode.workflows.tracking import parent_run


@dataclass
class PlannedRun:
    """One run of the study: its setting, seed and fully resolved config."""
    setting: Setting
    seed: int
    cfg: Config


def folder_name(label: str, seed: int) -> str:
    """A run folder name for a setting and seed: filesystem-safe, and short (long labels get a hash suffix)."""
    safe = re.sub(r"[^A-Za-z0-9._+=,-]+", "_", label)
    if len(safe) > 80:
        safe = f"{safe[:60]}-{hashlib.sha1(label.encode()).hexdigest()[:10]}"
    return f"{safe}-seed{seed}"


def plan(study: str, base: str | None = None, overrides: list[str] | tuple[str, ...] = (), epochs: int | None = None,
         subset: float | None = None, seeds: int = 1, out: str | Path | None = None
         ) -> tuple[str, Path, list[PlannedRun]]:
    """Resolve every run of a study before any starts, so a bad key or value fails at once."""
    if seeds < 1 or (epochs is not None and epochs < 1) or (subset is not None and subset <= 0):
        raise UsageError("--seeds and --epochs must be >= 1 and --subset > 0")
    common = {k: v for k, v in (("train.epochs", epochs), ("data.subset", subset)) if v is not None}
    base = base or "default"
    base_cfg = resolve_config(base, overrides, common)
    name, settings = resolve_study(study, base_cfg)
    names = [folder_name(s.label, 0) for s in settings]
    if len(set(names)) != len(names):
        raise UsageError(f"study {name}: setting labels must stay distinct as folder names ({', '.join(names)})")
    study_dir = Path(out) if out else Path(base_cfg.run.dir) / "ablate" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    runs = []
    for setting in settings:
        for seed in range(seeds):
            run_keys = {"train.seed": seed, "run.dir": str(study_dir), "run.name": folder_name(setting.label, seed)}
            try:
                cfg = resolve_config(base, overrides, common | setting.keys | run_keys)
            except UsageError as e:
                raise UsageError(f"study {name}, setting {setting.label}: {e}") from None
            runs.append(PlannedRun(setting, seed, cfg))
    return name, study_dir, runs


def result_row(run: PlannedRun, status: str, error: str = "") -> dict:
    """The results-table row of one run: setting, seed, status, studied keys and the comparison columns."""
    run_dir = run_folder(run.cfg)
    row = {"setting": run.setting.label, "seed": run.seed, "status": status, "run_dir": str(run_dir),
           **run.setting.keys}
    if status != "failed":
        row |= {k: v for k, v in run_row(run_dir).items() if k not in ("run", "config")}
    else:
        row |= {k: None for k in COLUMNS if k != "run"} | {"error": error}
    return row


def run_study(study: str, base: str | None = None, overrides: list[str] | tuple[str, ...] = (),
              epochs: int | None = None, subset: float | None = None, seeds: int = 1,
              out: str | Path | None = None, quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or complete) every run of a study and write all_results.json, results.csv/.md and plots.

    Finished runs are skipped, interrupted ones resume from their last.pt, and a failing run is recorded as
    failed with its error without stopping the others.
    """
    name, study_dir, runs = plan(study, base, overrides, epochs, subset, seeds, out)
    check_planned([run.cfg for run in runs])  # a rerun with other settings must not mix with the earlier runs
    study_dir.mkdir(parents=True, exist_ok=True)
    with parent_run(runs[0].cfg, f"ablate-{name}"):
        rows = _run_all(name, study_dir, runs, quiet, log)
    return {"study": name, "dir": study_dir, "rows": rows}


def _run_all(name: str, study_dir: Path, runs: list[PlannedRun], quiet: bool, log: Callable[[str], None]) -> list:
    rows = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {name}: {run.setting.label} seed {run.seed}"
        (run_folder(run.cfg) / "error.txt").unlink(missing_ok=True)
        try:
            status, _ = complete_run(run.cfg, quiet=quiet)
            rows.append(result_row(run, "done"))
            log(f"{tag}: {'already finished, skipped' if status == 'finished' else status}")
        except Exception as e:  # recorded, and the study goes on
            try:
                atomic_write_text(run_folder(run.cfg) / "error.txt", traceback.format_exc())
            except OSError:
                pass
            rows.append(result_row(run, "failed", f"{type(e).__name__}: {e}"))
            log(f"{tag}: FAILED ({type(e).__name__}: {e})")
        write_results(name, study_dir, runs, rows)  # after every run, so a killed study still has its table
    return rows


def table_columns(runs: list[PlannedRun]) -> list[str]:
    """setting, seed, status, the keys that vary across settings, then the comparison columns."""
    keys = list(dict.fromkeys(k for r in runs for k in r.setting.keys))
    varied = [k for k in keys if len({repr(r.setting.keys.get(k)) for r in runs}) > 1]
    return ["setting", "seed", "status", *varied, *[c for c in COLUMNS if c not in ("run",)]]


def summary(rows: list[dict]) -> list[dict]:
    """Per setting: runs, mean and standard deviation of test accuracy over seeds, mean training time."""
    out = []
    for label in dict.fromkeys(r["setting"] for r in rows):
        accs = [r["test_acc"] for r in rows if r["setting"] == label and r["test_acc"] is not None]
        times = [r["train_time_s"] for r in rows if r["setting"] == label and r["train_time_s"] is not None]
        out.append({"setting": label, "runs": len(accs),
                    "mean_test_acc": statistics.fmean(accs) if accs else None,
                    "std_test_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
                    "mean_train_time_s": statistics.fmean(times) if times else None})
    return out


def _summary_markdown(rows: list[dict]) -> str:
    lines = ["| setting | runs | test acc (mean ± std) | train time (mean) |", "|---|---|---|---|"]
    for s in summary(rows):
        acc = (f"{100 * s['mean_test_acc']:.2f}% ± {100 * s['std_test_acc']:.2f}"
               if s["mean_test_acc"] is not None else "failed")
        time = f"{s['mean_train_time_s']:.1f} s" if s["mean_train_time_s"] is not None else ""
        lines.append(f"| {s['setting']} | {s['runs']} | {acc} | {time} |")
    return "\n".join(lines) + "\n"


def write_results(name: str, study_dir: Path, runs: list[PlannedRun], rows: list[dict]) -> None:
    """all_results.json, results.csv, results.md and the two plots."""
    columns = table_columns(runs)
    atomic_write_text(study_dir / "all_results.json", json.dumps({"study": name, "runs": rows}, indent=2))
    atomic_write_text(study_dir / "results.csv", csv_table(rows, columns + ["error"]))
    failed = [r for r in rows if r["status"] == "failed"]
    md = [f"# Ablation study: {name}\n",
          f"{len(rows) - len(failed)} of {len(runs)} runs finished, {len(failed)} failed.\n",
          _summary_markdown(rows), markdown_table(rows, columns)]
    md += [f"- {r['setting']} seed {r['seed']} failed: {r['error']}\n" for r in failed]
    atomic_write_text(study_dir / "results.md", "\n".join(md))
    done = [r for r in rows if r["test_acc"] is not None]
    if done:
        plot_by_setting(name, done, study_dir / "accuracy_by_setting.png")
        plot_vs_time(name, done, study_dir / "accuracy_vs_time.png")


def plot_by_setting(name: str, rows: list[dict], path: Path) -> Path:
    """Mean test accuracy per setting (bars) with every seed as a dot and the seed spread as an error bar."""
    stats = [s for s in summary(rows) if s["mean_test_acc"] is not None]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(stats) + 2), 4.5))
    x = range(len(stats))
    ax.bar(x, [100 * s["mean_test_acc"] for s in stats], yerr=[100 * s["std_test_acc"] for s in stats],
           color="tab:blue", alpha=0.6, capsize=4)
    for i, s in enumerate(stats):
        accs = [100 * r["test_acc"] for r in rows if r["setting"] == s["setting"]]
        ax.plot([i] * len(accs), accs, "o", color="black", ms=4)
        top = max(accs + [100 * (s["mean_test_acc"] + s["std_test_acc"])])
        ax.text(i, top + 0.3, f"{100 * s['mean_test_acc']:.1f}", ha="center", va="bottom")
    ax.set_xticks(list(x))
    ax.set_xticklabels([s["setting"] for s in stats], rotation=20, ha="right")
    low = min(100 * r["test_acc"] for r in rows)
    ax.set(ylabel="test accuracy (%)", title=f"{name}: test accuracy per setting (dots: seeds)",
           ylim=(max(0, low - 10), min(100, max(100 * r["test_acc"] for r in rows) + 5)))
    ax.grid(axis="y", alpha=0.3)
    return save_fig(fig, path)


def plot_vs_time(name: str, rows: list[dict], path: Path) -> Path:
    """Test accuracy against training time, one colour per setting."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == label]
        ax.plot([r["train_time_s"] for r in mine], [100 * r["test_acc"] for r in mine], "o", label=label)
    ax.set(xlabel="training time (s)", ylabel="test accuracy (%)", title=f"{name}: accuracy vs time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_fig(fig, path)

