import json
import math

import pytest

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.experiments.lr_find import run_lr_find, suggest
from tests.conftest import fast_overrides, run_cli


def test_lr_find_returns_a_finite_suggestion_and_a_plot(tmp_path, tiny_tree):
    cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{"optim.name": "sgd"}))
    r = run_lr_find(cfg, tmp_path / "lr", start_lr=1e-4, end_lr=10.0, steps=30)
    assert math.isfinite(r["suggested_lr"]) and 1e-4 <= r["suggested_lr"] <= 10.0
    assert 5 <= len(r["lrs"]) <= 30 and r["lrs"] == sorted(r["lrs"])
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 0
    assert json.loads((tmp_path / "lr" / "lr_find.json").read_text())["suggested_lr"] == r["suggested_lr"]


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-5 + i * 0.1) for i in range(60)]
    loss = [2.0 - 1.5 / (1 + math.exp(-(i - 25) / 3)) for i in range(50)] + [5.0] * 10  # drops fastest at i=25
    assert abs(math.log10(suggest(lrs, loss)) - math.log10(lrs[25])) < 0.25


def test_compare_two_runs_from_the_cli(tmp_path, tiny_tree):
    runs = [train(resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{"run.name": n, "model.name": m})),
                  quiet=True) for n, m in (("a", "simplecnn"), ("b", "lenet5"))]
    result = run_cli("compare", *map(str, runs), "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| a | simplecnn |" in table and "| b | lenet5 |" in table
    assert (tmp_path / "cmp" / "comparison.png").exists() and (tmp_path / "cmp" / "comparison.csv").exists()
    import csv

    rows = list(csv.DictReader((tmp_path / "cmp" / "comparison.csv").open()))
    assert list(rows[0])[:3] == ["run", "model", "model.name"]  # the one key that differs, and no run.name
    assert "run.name" not in rows[0] and {"val_acc", "gap", "infer_img_s", "peak_mem_mb"} <= set(rows[0])
    for row, run in zip(rows, runs):
        m = json.loads((run / "metrics.json").read_text())
        history = list(csv.DictReader((run / "history.csv").open()))
        kept = next(h for h in history if int(h["epoch"]) == m["best_epoch"])
        assert float(row["gap"]) == pytest.approx(float(kept["train_acc"]) - m["test"]["accuracy"])
        assert float(row["infer_img_s"]) == m["inference_images_per_s"] > 0
    from cnnmode.experiments.compare import differing_keys
    from cnnmode.experiments.runs_table import list_runs

    assert run_cli("runs", str(tmp_path / "runs")).returncode == 0
    listed = list_runs(tmp_path / "runs", "run")
    assert differing_keys(listed) == ["model.name"] and all(r["gap"] is not None and r["val_acc"] for r in listed)
    bad = run_cli("compare", str(tmp_path))
    assert bad.returncode == 2 and "metrics.json" in bad.stderr


def test_hog_svm_baseline_writes_a_run_folder_that_compare_reads(tmp_path, tiny_tree):
    result = run_cli("baseline", "hog-svm", "--data", str(tiny_tree), "--components", "60", "--C", "1",
                     f"data.root={tmp_path / 'data'}", f"run.dir={tmp_path / 'runs'}", "run.name=hog")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "hog"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5  # 3 well-separated shapes
    assert (run / "eval" / "confusion_matrix.png").exists() and (run / "config.yaml").exists()
    assert run_cli("compare", str(run), "--out", str(tmp_path / "c")).returncode == 0
    assert "| hog | hog-svm |" in (tmp_path / "c" / "comparison.md").read_text()
