"""Data-parallel training through the real `torchrun` (2 gloo ranks on the CPU, one thread each): one run folder
written by rank 0, the same weights as one process with the same global batch, checkpoints that move between
1 and 2 processes, elastic restarts, and mid-epoch kill -9 → bitwise-identical resume."""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import fast_overrides

ROOT = Path(__file__).resolve().parents[2]

# LeNet-5 has no batch norm and no dropout, and without random augmentation two ranks of half a batch compute
# exactly the gradients of one process with the whole batch (up to float summation order).
PLAIN = {"model.name": "lenet5", "aug.flip": False, "aug.crop_padding": 0, "aug.cutout": 0, "train.amp": "off",
         "train.batch_size": 16, "train.epochs": 2, "train.deterministic": True, "train.ema": 0,
         "train.label_smoothing": 0.0}


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNMODE_TEST_")}
    return env | {"OMP_NUM_THREADS": "1", "COLUMNS": "200"} | extra


def torchrun(*args: str, ranks: int = 2, restarts: int = 0, env: dict | None = None,
             timeout: int = 240) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m cnnmode ARGS` in a subprocess."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           f"--max-restarts={restarts}", "-m", "cnnmode", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or _env())


def single(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnmode", *args], capture_output=True, text=True, timeout=240,
                          env=env or _env())


def _last_weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _overrides(tmp: Path, data: Path, name: str, **extra) -> list[str]:
    return fast_overrides(tmp, data, **(PLAIN | {"run.name": name} | extra))


def _same(a: dict, b: dict, exact: bool) -> bool:
    if exact:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_tree) -> Path:
    tmp = tmp_path_factory.mktemp("ddp-ref")
    done = single("train", *_overrides(tmp, tiny_tree, "ref"))
    assert done.returncode == 0, done.stderr
    return tmp / "runs" / "ref"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_tree) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("ddp-two")
    done = torchrun("train", *_overrides(tmp, tiny_tree, "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "ddp", done


def test_two_ranks_write_one_run_folder_and_match_one_process(two_ranks, one_process):
    run, done = two_ranks
    assert [p.name for p in run.parent.iterdir()] == ["ddp"]
    for name in ("model.pt", "metrics.json", "report.html", "history.csv", "train.log", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert done.stdout.count("epoch 1/2") == 1 and "rank 0 of 2" in done.stdout  # rank 0 alone prints
    assert "1 threads" in done.stdout  # 2 cores shared by 2 ranks
    assert (run / "train.log").read_text().count("epoch 2/2") == 1
    assert torch.load(run / "last.pt", weights_only=True)["world_size"] == 2
    assert _same(_last_weights(run), _last_weights(one_process), exact=False)


def test_every_rank_holds_the_same_parameters_after_every_step(tmp_path):
    out = tmp_path / "steps.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(Path(__file__).with_name("ddp_worker.py")), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env(PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["ranks"] == 2 and seen["steps"] == 96 // 16 and all(seen["equal"])
    assert seen["batch_per_rank"] == 8  # the global batch of 16, split


def test_checkpoints_move_between_one_and_two_processes(tmp_path, two_ranks, one_process):
    """A 2-process run extended by one process, and a 1-process run extended by two (copies of the runs above)."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(two_ranks[0], a)
    shutil.copytree(one_process, b)
    resumed = single("train", "--resume", str(a), "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming a 2-process run with 1" in resumed.stdout
    resumed = torchrun("train", "--resume", str(b), "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for run in (a, b):
        assert len(torch.load(run / "last.pt", weights_only=True)["state"]["history"]) == 3


def test_a_global_batch_that_does_not_divide_among_the_ranks_is_one_line(tmp_path, tiny_tree):
    done = torchrun("train", *_overrides(tmp_path, tiny_tree, "odd", **{"train.batch_size": 15}))
    assert done.returncode != 0
    assert "train.batch_size=15 is the global batch and must divide evenly among the 2 ranks" in done.stderr


@pytest.mark.parametrize("ranks", [1, 2])
def test_kill_9_mid_epoch_then_resume_is_bitwise_identical(tmp_path, tiny_tree, ranks):
    """Killed after a random optimizer step (between step checkpoints too), resumed: the same bits."""
    keys = {"train.epochs": 3, "train.checkpoint_every_steps": 2, "sched.name": "onecycle", "aug.flip": True,
            "aug.crop_padding": 2}
    launch = torchrun if ranks == 2 else (lambda *a, **k: single(*a, **k))
    full = launch("train", *_overrides(tmp_path, tiny_tree, "full", **keys))
    assert full.returncode == 0, full.stderr[-3000:]
    steps = 90 // 16  # images per epoch / global batch
    at = random.Random(ranks).randrange(1, 3 * steps - 1)
    args = _overrides(tmp_path, tiny_tree, "killed", **keys)
    killed = launch("train", *args, env=_env(CNNMODE_TEST_KILL_AT_STEP=str(at), CNNMODE_TEST_KILL_RANK=str(ranks - 1)))
    assert killed.returncode != 0
    run = tmp_path / "runs" / "killed"
    again = launch("train", "--resume", str(run)) if (run / "last.pt").exists() else launch("train", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _same(_last_weights(run), _last_weights(tmp_path / "runs" / "full"), exact=True), f"killed at step {at}"
    assert not list(run.glob(".*.tmp"))


def test_elastic_restart_goes_on_from_last_pt(tmp_path, tiny_tree):
    """Rank 1 dies mid-epoch; torchrun --max-restarts 1 restarts both, and they go on from last.pt."""
    keys = {"train.epochs": 3, "train.checkpoint_every_steps": 1}
    done = torchrun("train", *_overrides(tmp_path, tiny_tree, "elastic", **keys), restarts=1,
                    env=_env(CNNMODE_TEST_KILL_AT_STEP="7", CNNMODE_TEST_KILL_RANK="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "runs" / "elastic" / "train.log").read_text()
    assert "elastic restart 1" in log and "resumed after step 2 of epoch 2" in log
    assert (tmp_path / "runs" / "elastic" / "model.pt").is_file()


def _alive(pid: int) -> bool:
    """A process that has not exited (a zombie, left unreaped in a container without init, counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 of the agent: POSIX signals")
def test_killing_the_torchrun_agent_stops_its_ranks_with_last_pt_resumable(tmp_path, tiny_tree):
    import signal
    import time

    import psutil

    args = _overrides(tmp_path, tiny_tree, "orphans", **{"train.epochs": 5000, "train.batch_size": 8})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cnnmode",
           "train", *args]
    log = tmp_path / "runs" / "orphans" / "train.log"
    with open(tmp_path / "stderr.txt", "w") as err:
        agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env())
        deadline = time.time() + 120
        while time.time() < deadline and "epoch 1/" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.5)
        ranks = [p.pid for p in psutil.Process(agent.pid).children()]
        assert len(ranks) == 2 and agent.poll() is None
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(p) for p in ranks):
            time.sleep(0.5)
    assert not any(_alive(p) for p in ranks), "ranks went on training without their agent"
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "torchrun agent that started this job is gone" in stderr and "--resume" in stderr, stderr[-2000:]
    run = tmp_path / "runs" / "orphans"
    state = torch.load(run / "last.pt", weights_only=True)["state"]
    assert state["partial"] is not None  # stopped mid-epoch, where it was
    again = torchrun("train", "--resume", str(run), f"train.epochs={state['epoch'] + 1}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == state["epoch"] + 1


def test_a_rank_whose_peer_failed_says_so_in_one_line_not_in_glooese(tmp_path):
    done = torchrun("train", *_overrides(tmp_path, tmp_path / "no-such-data", "peer"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 2, done.stderr[-3000:]
    peer = "error: rank 1 stopped because another rank of the job failed (its error says why)"
    assert peer in errors and any("data.path" in e and "does not exist" in e for e in errors)
    assert "gloo" not in done.stderr and "Connection reset" not in done.stderr
