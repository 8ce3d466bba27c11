"""A run folder belongs to one process at a time, and what a killed write left behind is cleared."""
import json

import pytest
import torch

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.errors import UsageError
from cnnmode.rundir import RunDir
from tests.conftest import fast_overrides, run_cli


def test_a_second_writer_of_the_same_run_folder_is_refused(tmp_path, tiny_tree):
    cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{"run.name": "dup"}))
    with RunDir(tmp_path / "runs" / "dup").locked():  # another process holding it (flock is per open file)
        with pytest.raises(UsageError, match="is in use by another cnnmode process"):
            train(cfg, quiet=True)
    assert (train(cfg, quiet=True) / "metrics.json").exists()  # free again
    with pytest.raises(UsageError, match="already holds a run"):
        train(cfg, quiet=True)


def test_stale_temp_files_are_removed_on_resume(tmp_path, tiny_tree):
    cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{"train.epochs": 2, "sched.name": "step"}))
    run = train(cfg, quiet=True, stop_after_epochs=1)
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    train(resume=run, quiet=True)
    assert not list(run.glob(".*.tmp")) and torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 2
    assert "removed .last.pt.abc123.tmp" in (run / "train.log").read_text()


@pytest.mark.parametrize("metrics", ["{\"test\": {\"accur", "[1, 2]", "\"text\""])
def test_runs_lists_every_run_and_marks_a_damaged_one(tmp_path, metrics):
    from cnnmode.experiments.runs_table import list_runs

    for name, text in (("good", json.dumps({"test": {"accuracy": 0.5}, "epochs_run": 1})), ("bad", metrics)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text("model: {name: simplecnn}\ntrain: {epochs: 1}\n")
        (run / "metrics.json").write_text(text)
    rows = {r["run"]: r for r in list_runs(tmp_path)}
    assert set(rows) == {"good", "bad"}
    assert rows["good"]["test_acc"] == 0.5 and rows["bad"]["status"] == "damaged: metrics.json"
    listed = run_cli("runs", str(tmp_path))
    assert listed.returncode == 0 and "damaged" in listed.stdout, listed.stderr
