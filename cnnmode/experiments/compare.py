"""`cnnmode compare`: one table (CSV, Markdown, console) and bar plot across run folders."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cnnmode.config import flatten, read_yaml
from cnnmode.errors import UsageError
from cnnmode.figures import plt, save_fig
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir

COLUMNS = ["run", "model", "val_acc", "test_acc", "gap", "top5", "f1_macro", "best_epoch", "train_time_s", "img_s",
           "infer_img_s", "peak_mem_mb", "params"]
PERCENT = ("val_acc", "test_acc", "gap", "top5", "f1_macro", "balanced_acc")
SKIP_KEYS = ("run.name", "run.dir", "data.root")  # differ between any two runs without changing what they measure


def run_row(run_dir: Path) -> dict:
    """One comparison row from a run folder's metrics.json, config.yaml and history.csv."""
    run = RunDir(run_dir)
    if not run.metrics.exists():
        raise UsageError(f"{run_dir} has no metrics.json (not a finished run folder)")
    m = json.loads(run.metrics.read_text())
    cfg = read_yaml(run.config) if run.config.exists() else {}
    history = run.history_rows()
    mems = [float(r["peak_mem_mb"]) for r in history if r.get("peak_mem_mb")]
    test, val = m.get("test", {}), m.get("val") or {}
    headline = "map" if m.get("task") == "multilabel" else "accuracy"
    return {"run": run.path.name, "model": m.get("model") or cfg.get("model", {}).get("name", ""),
            "val_acc": val.get(headline), "test_acc": test.get(headline), "gap": train_test_gap(history, m),
            "top5": test.get("top5"), "f1_macro": test.get("f1_macro"),
            "best_epoch": m.get("best_epoch"), "train_time_s": m.get("train_time_s"),
            "img_s": m.get("images_per_s"), "infer_img_s": m.get("inference_images_per_s"),
            "peak_mem_mb": max(mems) if mems else None, "params": m.get("params"),
            "config": flatten(cfg)}


def train_test_gap(history: list[dict], metrics: dict) -> float | None:
    """Training accuracy at the kept epoch minus test accuracy (the seed's "overfitting index"); None when either
    is unknown (multi-label runs keep no training accuracy)."""
    kept = metrics.get("best_epoch")
    row = next((r for r in history if str(r.get("epoch")) == str(kept)), history[-1] if history else None)
    test = (metrics.get("test") or {}).get("accuracy")
    if not row or not row.get("train_acc") or test is None or metrics.get("task") == "multilabel":
        return None
    return float(row["train_acc"]) - test


def differing_keys(rows: list[dict]) -> list[str]:
    """The config keys whose values differ between the rows' runs (run names and folders aside)."""
    keys = list(dict.fromkeys(k for r in rows for k in r.get("config", {})))
    return [k for k in keys if k not in SKIP_KEYS
            and len({repr(r.get("config", {}).get(k)) for r in rows}) > 1]


def with_differences(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Rows with each differing config key as a column of its own, and those keys."""
    keys = differing_keys(rows)
    return [r | {k: r.get("config", {}).get(k) for k in keys} for r in rows], keys


def format_cell(key: str, value) -> str:
    """A table cell: percentages for accuracies, millions for parameters, config values (dotted keys) as they are
    written, one decimal for other floats."""
    if value is None:
        return ""
    if "." in key:
        return f"{value:g}" if isinstance(value, float) else str(value)
    if key == "gap":
        return f"{100 * value:+.2f}"
    if key in PERCENT:
        return f"{100 * value:.2f}%"
    if key == "params":
        return f"{value / 1e6:.2f} M"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    """A Markdown table of `rows` with formatted cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    """CSV text of `rows` (raw values)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def accuracy_bars(rows: list[dict], path: Path, label: str = "run") -> Path:
    """Horizontal bars of test accuracy per row."""
    names = [str(r[label]) for r in rows]
    values = [100 * (r["test_acc"] or 0) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ax.barh(range(len(rows)), values, color="tab:blue")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}%", va="center")
    ax.set(xlabel="test accuracy (%)", xlim=(0, max(values + [1]) * 1.12), title="Test accuracy")
    return save_fig(fig, path)


def compare_runs(run_dirs: list[str], out: str | Path) -> tuple[list[dict], Path]:
    """Rows for `run_dirs` (with a column per config key that differs between them), with comparison.csv,
    comparison.md and comparison.png written to `out`."""
    if not run_dirs:
        raise UsageError("give at least one run folder")
    rows, keys = with_differences([run_row(Path(d)) for d in run_dirs])
    columns = COLUMNS[:2] + keys + COLUMNS[2:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.csv", csv_table(rows, columns))
    atomic_write_text(out / "comparison.md", markdown_table(rows, columns))
    accuracy_bars(rows, out / "comparison.png")
    return rows, out
