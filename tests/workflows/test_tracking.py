"""Trackers: a run with both writes what MLflow's client and TensorBoard's event reader read back; an ablation's
runs are nested under one MLflow parent run."""
from __future__ import annotations

import pytest

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.errors import UsageError
from tests.conftest import fast_overrides

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


def test_a_run_with_both_trackers(tmp_path, tiny_tree):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{
        "run.name": "tracked", "train.epochs": 2, "run.trackers": "tensorboard,mlflow"}))
    run = train(cfg, quiet=True)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [found] = client.search_runs([client.get_experiment_by_name("cnnmode").experiment_id])
    assert found.info.run_name == "tracked" and found.info.status == "FINISHED"
    assert found.data.params["model.name"] == "simplecnn" and found.data.params["train.epochs"] == "2"
    assert found.data.tags["model"] == "simplecnn" and "device" in found.data.tags
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_acc")] == [1, 2]
    assert 0 <= found.data.metrics["test_accuracy"] <= 1 and "test_balanced_accuracy" in found.data.metrics
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"plots", "eval", "report.html", "MODEL_CARD.md", "model.pt", "metrics.json"} <= artifacts
    assert (tmp_path / "runs" / "mlartifacts").is_dir()  # artifacts beside the database, not in the cwd

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train_loss", "val_acc", "lr"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val_acc")] == [1, 2]
    assert {"training_curves", "confusion_matrix_normalized"} <= set(tags["images"])
    assert tags["graph"]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))


def test_an_ablation_nests_its_runs_under_one_parent(tmp_path, tiny_tree):
    from cnnmode.experiments.ablate import run_study

    study = tmp_path / "lr.yaml"
    study.write_text("grid:\n  optim.lr: [0.001, 0.003]\n")
    overrides = fast_overrides(tmp_path, tiny_tree, **{"run.trackers": "mlflow"})
    run_study(str(study), "generic", overrides, out=tmp_path / "st", quiet=True, log=lambda _: None)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'st' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnmode").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and parents[0].info.run_name == "ablate-lr"
    assert sorted(r.data.params["optim.lr"] for r in children) == ["0.001", "0.003"]


def test_unknown_tracker_is_one_clear_error():
    with pytest.raises(UsageError, match="choose from: tensorboard, mlflow"):
        resolve_config(overrides=["run.trackers=wandb"])
