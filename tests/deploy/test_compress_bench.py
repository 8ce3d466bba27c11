import json

import pytest

from cnnmode.deploy.bench import bench
from cnnmode.deploy.runtime import BACKENDS, CALIBRATED, auto_backend
from cnnmode.deploy.compress import run_prune
from tests.conftest import run_cli


@pytest.mark.parametrize("structured", [False, True])
def test_prune_reaches_requested_sparsity(trained_run, tmp_path, structured):
    r = run_prune(str(trained_run), 0.4, structured=structured, finetune_epochs=1, out=str(tmp_path))
    convs_share = 0.97 if structured else 1.0  # channel pruning leaves the linear layers dense
    assert r["sparsity"] == pytest.approx(0.4 * convs_share, abs=0.05) if not structured else 0.05 < r["sparsity"] < 0.4
    assert 0 <= r["accuracy_pruned"] <= 1 and "accuracy_finetuned" in r
    assert json.loads((tmp_path / "prune.json").read_text())["sparsity"] == r["sparsity"]
    from cnnmode import load_artifact
    from cnnmode.deploy.compress import sparsity
    assert sparsity(load_artifact(tmp_path / "model.pt").model) == pytest.approx(r["sparsity"])


def test_distill_runs_one_epoch(trained_run, tmp_path):
    result = run_cli("distill", "--teacher", str(trained_run), "--student", "lenet5", "train.epochs=1",
                     f"run.dir={tmp_path}", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "teacher" in result.stdout and "student" in result.stdout and "lenet5" in result.stdout
    run = result.stdout.strip().splitlines()[-1].removeprefix("run: ")
    report = json.loads((tmp_path / run.split("/")[-1] / "distill.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]


def test_bench_all_backends_small_batches(trained_run, tmp_path):
    r = bench(str(trained_run), [1, 8], BACKENDS.names(), out=str(tmp_path / "b.json"), budget_s=0.2)
    assert list(r["backends"]) == BACKENDS.names()
    for name, row in r["backends"].items():
        assert set(row["batches"]) == {"1", "8"}
        assert all(b["img_s"] > 0 and b["p95_ms"] >= b["p50_ms"] > 0 for b in row["batches"].values())
        assert 0 <= row["accuracy"] <= 1
        if name not in CALIBRATED:
            assert row["top1_agreement"] >= 0.99
    assert json.loads((tmp_path / "b.json").read_text())["eval_data"] == "real"


def test_bench_cli_prints_one_row_per_backend_and_batch(trained_run, tmp_path):
    result = run_cli("bench", str(trained_run), "--batch-sizes", "1,4", "--backends", "eager,torchscript",
                     "--out", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 4 and "torchscript" in result.stdout and "1.0x" in rows[0]
    assert json.loads((tmp_path / "b.json").read_text())["backends"]["torchscript"]["batches"]["4"]["img_s"] > 0


def test_bench_by_default_names_the_auto_backend_first_and_compares_it_with_eager(trained_run, tmp_path):
    result = run_cli("bench", str(trained_run), "--batch-sizes", "2", "--out", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr
    chosen = auto_backend("cpu", can_calibrate=True)[0]
    first, second = result.stdout.splitlines()[:2]
    assert first == "bench on cpu"  # --device auto, and no GPU here
    assert second.startswith(f"auto: backend {chosen} on cpu (auto")
    rows = json.loads((tmp_path / "b.json").read_text())["backends"]
    assert list(rows) == ["auto", "eager"] and rows["auto"]["backend"] == chosen
    assert rows["eager"]["passes_gate"] and rows["eager"]["top1_agreement"] == 1.0
