"""What a run leaves for later: the model card matches metrics.json, keep-N checkpoints, the runs table, and a
balanced sampler with class weights and focal loss training to the end."""
from __future__ import annotations

import json

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.evaluation.card import model_card
from cnnmode.experiments.runs_table import list_runs
from tests.conftest import fast_overrides, run_cli


def _run(tmp_path, tiny_tree, **extra):
    return train(resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **extra)), quiet=True)


def test_model_card_matches_metrics(tmp_path, tiny_tree):
    run = _run(tmp_path, tiny_tree, **{"run.name": "card"})
    metrics = json.loads((run / "metrics.json").read_text())
    card = (run / "MODEL_CARD.md").read_text()
    assert card == model_card(run)
    test = metrics["test"]
    for value in (test["accuracy"], test["balanced_accuracy"], test["top5"], test["f1_macro"]):
        assert f"{100 * value:.2f}%" in card
    assert f"T = {test['temperature']:.3f}" in card and metrics["data"]["checksum"].startswith("listing:")
    counts = metrics["data"]["counts"]
    assert counts["test"] == {"circle": 10, "square": 10, "stripes": 10}
    for cls in metrics["classes"]:
        assert f"| {cls} | {counts['train'][cls]} | {counts['val'][cls]} | {counts['test'][cls]} |" in card
    assert "## Known failure modes" in card and "MIT" in card


def test_keep_checkpoints_leaves_exactly_n(tmp_path, tiny_tree):
    run = _run(tmp_path, tiny_tree, **{"run.name": "keep", "train.epochs": 4, "train.keep_checkpoints": 2})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0003.pt", "epoch-0004.pt"]
    every = _run(tmp_path, tiny_tree, **{"run.name": "every", "train.epochs": 4, "train.save_every": 2})
    assert sorted(p.name for p in (every / "checkpoints").iterdir()) == ["epoch-0002.pt", "epoch-0004.pt"]
    assert not (_run(tmp_path, tiny_tree, **{"run.name": "none"}) / "checkpoints").exists()


def test_imbalance_remedies_train_and_the_runs_table_lists_them(tmp_path, tiny_tree):
    _run(tmp_path, tiny_tree, **{"run.name": "a", "data.sampler": "balanced", "train.class_weights": "auto",
                                 "train.loss": "focal"})
    _run(tmp_path, tiny_tree, **{"run.name": "b", "train.epochs": 2, "train.class_weights": "effective"})
    rows = list_runs(tmp_path / "runs", sort="run")
    assert [r["run"] for r in rows] == ["b", "a"] or [r["run"] for r in rows] == ["a", "b"]
    assert {r["epochs"] for r in rows} == {"1/1", "2/2"} and all(r["status"] == "finished" for r in rows)
    out = run_cli("runs", str(tmp_path / "runs"), "--sort", "epochs", "--asc")
    assert out.returncode == 0 and out.stdout.index(" a ") < out.stdout.index(" b "), out.stdout
    bad = run_cli("runs", str(tmp_path / "runs"), "--sort", "nope")
    assert bad.returncode == 2 and "choose one of" in bad.stderr
