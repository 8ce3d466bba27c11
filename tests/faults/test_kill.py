"""kill -9 at random points of a deterministic CPU run (start-up, mid-epoch, mid-checkpoint, the final report),
then resume: the weights end bitwise identical to an uninterrupted run."""
import random
import subprocess
import sys
import time

import torch

from tests.conftest import fast_overrides, run_cli


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


def test_kill_9_then_resume_is_bitwise_identical(tmp_path, tiny_tree):
    keys = {"train.epochs": 4, "train.deterministic": True, "sched.name": "onecycle", "train.ema": 0.9}
    full = run_cli("train", *fast_overrides(tmp_path, tiny_tree, **keys, **{"run.name": "full"}))
    assert full.returncode == 0, full.stderr
    reference = _weights(tmp_path / "runs" / "full")
    rng = random.Random(0)
    for i in range(2):  # mid-epoch kills at exact steps: tests/workflows/test_ddp.py
        args = fast_overrides(tmp_path, tiny_tree, **keys, **{"run.name": f"killed{i}"})
        proc = subprocess.Popen([sys.executable, "-m", "cnnmode", "train", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 9.0))
        proc.kill()
        proc.wait()
        run = tmp_path / "runs" / f"killed{i}"
        again = run_cli("train", "--resume", str(run)) if (run / "last.pt").exists() else run_cli("train", *args)
        assert again.returncode == 0, again.stderr
        resumed = _weights(run)
        assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)
        assert not list(run.glob(".*.tmp"))
