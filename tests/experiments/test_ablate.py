import json

import pytest

from cnnmode.errors import UsageError
from cnnmode.experiments.ablate import plan, run_study
from cnnmode.experiments.studies import STUDIES
from cnnmode.config import resolve_config
from tests.conftest import run_cli


def test_two_run_study_writes_its_table_and_a_rerun_skips_both(tmp_path, base_yaml):
    study = tmp_path / "lr.yaml"
    study.write_text("grid:\n  optim.lr: [0.001, 0.003]\n")
    out = tmp_path / "study"
    first = run_cli("ablate", str(study), "--base", str(base_yaml), "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    results = json.loads((out / "all_results.json").read_text())["runs"]
    assert [r["setting"] for r in results] == ["lr=0.001", "lr=0.003"]
    assert all(r["status"] == "done" and 0 <= r["test_acc"] <= 1 and r["params"] > 0 for r in results)
    table = (out / "results.md").read_text()
    assert "| lr=0.001 | 0 | done | 0.001 |" in table and "optim.lr" in table
    assert (out / "results.csv").read_text().startswith("setting,seed,status,optim.lr,model,val_acc,test_acc,gap,")
    assert (out / "accuracy_by_setting.png").exists() and (out / "accuracy_vs_time.png").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    again = run_cli("ablate", str(study), "--base", str(base_yaml), "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already finished, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == mtimes and len(mtimes) == 2


def test_a_failing_run_is_recorded_and_the_study_goes_on(tmp_path, base_yaml):
    study = tmp_path / "s.yaml"
    study.write_text("settings:\n  broken: {model.pretrained: /missing/weights.pt}\n  fine: {}\n")
    r = run_study(str(study), str(base_yaml), out=tmp_path / "st", quiet=True, log=lambda _: None)
    broken, fine = r["rows"]
    assert broken["status"] == "failed" and "missing/weights.pt" in broken["error"]
    assert (tmp_path / "st" / "broken-seed0" / "error.txt").exists()
    assert fine["status"] == "done" and fine["test_acc"] is not None
    assert "broken seed 0 failed" in (tmp_path / "st" / "results.md").read_text()


def test_an_interrupted_run_is_completed_by_the_rerun(tmp_path, base_yaml):
    from cnnmode.workflows.train import train

    _, out, runs = plan("label_smoothing", str(base_yaml), ["train.epochs=2"], out=tmp_path / "ls")
    train(runs[0].cfg, quiet=True, stop_after_epochs=1)  # as if killed after its first epoch
    assert not (out / "ls0-seed0" / "metrics.json").exists()
    lines = []
    run_study("label_smoothing", str(base_yaml), ["train.epochs=2"], out=out, quiet=True, log=lines.append)
    assert "ls0 seed 0: resumed" in lines[0] and len(lines) == 5
    assert json.loads((out / "ls0-seed0" / "metrics.json").read_text())["epochs_run"] == 2


def test_builtin_studies_differ_only_in_their_keys(base_yaml):
    base = resolve_config(str(base_yaml), ["optim.lr=0.2", "train.batch_size=128"])
    assert STUDIES.names() == ["augmentation", "batch_size", "depth", "image_size", "label_smoothing", "optimizer",
                               "scheduler"]
    sizes = {s.label: s.keys for s in STUDIES.get("batch_size")(base)}
    assert sizes["bs32"] == {"train.batch_size": 32, "optim.lr": pytest.approx(0.05)}
    assert [s.label for s in STUDIES.get("augmentation")(base)] == ["none", "flip", "autoaugment",
                                                                     "autoaugment+cutout"]
    _, _, runs = plan("optimizer", str(base_yaml), seeds=2)
    assert [(r.setting.label, r.seed) for r in runs][:3] == [("sgd", 0), ("sgd", 1), ("adam", 0)]
    assert {r.cfg.optim.name for r in runs} == {"sgd", "adam", "adamw", "radam", "muon"}
    assert {r.cfg.model.name for r in runs} == {"simplecnn"}


def test_unknown_study_and_bad_keys_fail_before_any_run(tmp_path, base_yaml):
    with pytest.raises(UsageError, match="choose one of: augmentation, batch_size"):
        plan("optimiser", str(base_yaml))
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  optim.lrr: [0.1]\n")
    with pytest.raises(UsageError, match="unknown config key 'optim.lrr'"):
        plan(str(bad), str(base_yaml))
