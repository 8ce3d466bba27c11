"""Trackers: a run with both writes what MLflow's client and TensorBoard's event reader read back; an ablation's
runs are nested under one MLflow parent run."""
from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Iterator

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
    with pytest.raises(UsageError, match="choose from: tensorboard, mlflow, wandb"):
        resolve_config(overrides=["run.trackers=neptune"])


def wandb_records(path: Path) -> Iterator:
    """The records of an offline run's `run-ID.wandb` file, parsed by wandb's own protobuf messages. The file is
    a LevelDB-style log (a 7-byte `:W&B` header, then 32 KiB blocks of checksummed chunks); wandb 0.31 reads it
    only in its Go core, so the framing is unpacked here."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # the rest of a block is padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _appears(find, seconds: float = 20.0) -> list:
    """What `find` returns once it is not empty: wandb's own process (wandb-core) writes the run's files, and on a
    busy machine may finish after `wandb.finish` has returned."""
    deadline = time.monotonic() + seconds
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_wandb_writes_an_offline_run_without_a_key(tmp_path, tiny_tree, monkeypatch):
    pytest.importorskip("wandb")
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login, no user settings
    cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{
        "run.name": "wb", "train.epochs": 2, "run.trackers": "wandb"}))
    run = train(cfg, quiet=True)
    [offline] = _appears(lambda: list((run / "wandb").glob("offline-run-*")))  # offline, in the run folder
    records = list(wandb_records(next(offline.glob("run-*.wandb"))))
    [started] = [r.run for r in records if r.HasField("run")]
    assert started.display_name == "wb" and "simplecnn" in started.tags
    assert started.run_id == (run / ".wandb_run_id").read_text()
    config = {item.key: item.value_json for item in started.config.update}
    assert config["model.name"] == '"simplecnn"' and config["train.epochs"] == "2"
    rows = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item} for r in records
            if r.HasField("history")]
    assert [row["epoch"] for row in rows] == ["1", "2"] and all("val_acc" in row for row in rows)
    assert '"image-file"' == rows[-1]["confusion_matrix_normalized/_type"]
    summary = {i.key: i.value_json for r in records if r.HasField("summary") for i in r.summary.update}
    assert 0 <= float(summary["test_accuracy"]) <= 1
    [artifact] = [r.artifact for r in records if r.HasField("artifact")]
    assert artifact.type == "model" and {"model.pt", "MODEL_CARD.md", "metrics.json"} <= \
        {m.path for m in artifact.manifest.contents}
    assert [r.exit.exit_code for r in records if r.HasField("exit")] == [0]
    assert list((offline / "files" / "media" / "images").glob("training_curves_*.png"))


def test_an_unreachable_tracking_server_is_dropped_quickly(tmp_path, tiny_tree):
    """#30 item 3: MLflow's default retries stalled a run for minutes and then failed it; now the tracker is
    reported once and dropped, and the run finishes and leaves its folder unlocked."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "cnnmode", "train", "--quiet", *fast_overrides(tmp_path, tiny_tree, **{
        "run.name": "offline", "run.trackers": "mlflow"})], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 120
    said = r.stdout + r.stderr
    assert said.count("tracker MlflowTracker failed") == 1 and "training goes on without it" in said
    from cnnmode.rundir import RunDir

    run = RunDir(tmp_path / "runs" / "offline")
    assert run.is_finished() and not run.in_use()
