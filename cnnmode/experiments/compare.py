"""`cnnmode compare`: one table (CSV, Markdown, console) and bar plot across run folders."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cnnmode.config import read_yaml
from cnnmode.errors import UsageError
from cnnmode.figures import plt, save_fig
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir

COLUMNS = ["run", "model", "test_acc", "top5", "f1_macro", "best_epoch", "train_time_s", "img_s", "peak_mem_mb",
           "params"]


def run_row(run_dir: Path) -> dict:
    """One comparison row from a run folder's metrics.json, config.yaml and history.csv."""
    run = RunDir(run_dir)
    if not run.metrics.exists():
        raise UsageError(f"{run_dir} has no metrics.json (not a finished run folder)")
    m = json.loads(run.metrics.read_text())
    cfg = read_yaml(run.config) if run.config.exists() else {}
    peak = None
    if run.history.exists():
        mems = [float(r["peak_mem_mb"]) for r in csv.DictReader(io.StringIO(run.history.read_text()))
                if r.get("peak_mem_mb")]
        peak = max(mems) if mems else None
    test = m.get("test", {})
    return {"run": run.path.name, "model": m.get("model") or cfg.get("model", {}).get("name", ""),
            "test_acc": test.get("accuracy"), "top5": test.get("top5"), "f1_macro": test.get("f1_macro"),
            "best_epoch": m.get("best_epoch"), "train_time_s": m.get("train_time_s"),
            "img_s": m.get("images_per_s"), "peak_mem_mb": peak, "params": m.get("params")}


def format_cell(key: str, value) -> str:
    """A table cell: percentages for accuracies, millions for parameters, config values (dotted keys) as they are
    written, one decimal for other floats."""
    if value is None:
        return ""
    if "." in key:
        return f"{value:g}" if isinstance(value, float) else str(value)
    if key in ("test_acc", "top5", "f1_macro", "balanced_acc"):
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
    """Rows for `run_dirs`, with comparison.csv, comparison.md and comparison.png written to `out`."""
    if not run_dirs:
        raise UsageError("give at least one run folder")
    rows = [run_row(Path(d)) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.csv", csv_table(rows))
    atomic_write_text(out / "comparison.md", markdown_table(rows))
    accuracy_bars(rows, out / "comparison.png")
    return rows, out
