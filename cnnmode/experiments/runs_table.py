"""`cnnmode runs [DIR]`: the runs in a folder as one table (the seed's experiment record), finished or not."""
from __future__ import annotations

import json
import time
from pathlib import Path

from cnnmode.config import flatten, read_yaml
from cnnmode.experiments.compare import train_test_gap
from cnnmode.errors import UsageError
from cnnmode.rundir import RunDir

COLUMNS = ["run", "recipe", "model", "data", "epochs", "val_acc", "test_acc", "gap", "balanced_acc", "train_time_s",
           "img_s", "infer_img_s", "peak_mem_mb", "date", "status"]
SORT_KEYS = tuple(COLUMNS)


def run_record(run_dir: Path, root: Path) -> dict:
    """One row for a run folder: from metrics.json when finished, else from config.yaml and history.csv."""
    run = RunDir(run_dir)
    cfg, cfg_ok = _readable(lambda: read_yaml(run.config))
    m, metrics_ok = _readable(lambda: json.loads(run.metrics.read_text()) if run.metrics.exists() else {})
    test = m.get("test") if isinstance(m.get("test"), dict) else {}
    val = m.get("val") if isinstance(m.get("val"), dict) else {}
    finished = bool(m) and run.model.exists()
    rows = run.history_rows()
    mems = [float(r["peak_mem_mb"]) for r in rows if r.get("peak_mem_mb")]
    stamp = (run.metrics if m else run.config).stat().st_mtime
    return {"run": run.path.relative_to(root).as_posix() if run.path != root else run.path.name,
            "recipe": cfg.get("recipe") or "", "model": cfg.get("model", {}).get("name", ""),
            "data": Path(str(cfg.get("data", {}).get("path", ""))).name,
            "epochs": f"{m.get('epochs_run', len(rows))}/{cfg.get('train', {}).get('epochs', '?')}",
            "val_acc": val.get("map", val.get("accuracy")), "test_acc": test.get("map", test.get("accuracy")),
            "gap": train_test_gap(rows, m) if m else None, "balanced_acc": test.get("balanced_accuracy"),
            "train_time_s": m.get("train_time_s"), "img_s": m.get("images_per_s"),
            "infer_img_s": m.get("inference_images_per_s"), "peak_mem_mb": max(mems) if mems else None,
            "config": flatten(cfg), "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)),
            "status": ("damaged: " + ", ".join(n for n, ok in (("config.yaml", cfg_ok), ("metrics.json", metrics_ok))
                                                if not ok)) if not (cfg_ok and metrics_ok)
            else "finished" if finished else ("running" if run.in_use() else "stopped")}


def _readable(read) -> tuple[dict, bool]:
    """(what `read` returns, True) when it is a mapping; ({}, False) for a damaged or foreign file, so that one bad
    run folder is marked in the table instead of hiding all the others."""
    try:
        value = read()
    except (OSError, ValueError, UsageError):
        return {}, False
    return (value, True) if isinstance(value, dict) else ({}, False)


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run folders (those with a config.yaml and a history or metrics) at most `depth` levels below `root`."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder; give a folder of runs (default ./runs)")
    found = []
    for config in sorted(root.rglob("config.yaml")):
        run = config.parent
        if len(run.relative_to(root).parts) <= depth and (RunDir(run).history.exists() or RunDir(run).metrics.exists()):
            found.append(run)
    return found


def list_runs(root: Path, sort: str = "date", descending: bool | None = None) -> list[dict]:
    """Rows for every run under `root`, sorted by a column (newest, or best, first by default)."""
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort!r}: choose one of {', '.join(SORT_KEYS)}")
    rows = [run_record(r, Path(root)) for r in find_runs(root)]
    desc = sort in ("date", "val_acc", "test_acc", "balanced_acc", "img_s", "infer_img_s") if descending is None \
        else descending
    present = [r for r in rows if r[sort] is not None]
    missing = [r for r in rows if r[sort] is None]
    return sorted(present, key=lambda r: r[sort], reverse=desc) + missing
