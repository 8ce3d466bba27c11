import json

import torch

from cnnmode.data.holdouts import stratified_fold
from tests.conftest import run_cli


def test_three_fold_cv_reports_each_fold_and_the_mean(tmp_path, base_yaml):
    out = tmp_path / "cv"
    r = run_cli("cv", "--folds", "3", "--config", str(base_yaml), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "cv.json").read_text())
    assert [f["fold"] for f in result["per_fold"]] == [0, 1, 2]
    accs = [f["best_val_acc"] for f in result["per_fold"]]
    assert abs(result["mean_val_acc"] - sum(accs) / 3) < 1e-9 and result["std_val_acc"] >= 0
    assert "validation accuracy" in r.stdout and "±" in (out / "cv.md").read_text()
    sizes = [json.loads((out / f"fold-{i}" / "metrics.json").read_text()) for i in range(3)]
    assert all(m["val"] is not None for m in sizes)


def test_folds_are_stratified_disjoint_and_cover_the_split():
    labels = torch.arange(3).repeat_interleave(30)
    held = [stratified_fold(labels, 3, i, seed=0)[1] for i in range(3)]
    assert sorted(torch.cat(held).tolist()) == list(range(90))
    assert all(torch.bincount(labels[h]).tolist() == [10, 10, 10] for h in held)
    kept, h0 = stratified_fold(labels, 3, 0, seed=0)
    assert set(kept.tolist()).isdisjoint(h0.tolist())
