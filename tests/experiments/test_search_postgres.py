"""`cnnmode search` against a real PostgreSQL server (a throwaway cluster, tests/pgserver.py): --jobs workers
sharing the study's N trials, a worker killed mid-trial, and the same command started twice (as on two machines).
The server is started once for this module; without PostgreSQL's binaries the tests are skipped."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.pgserver import find_bin_dir, postgres_server

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2", reason="the PostgreSQL driver (psycopg2-binary, in requirements.txt) is missing")

ENV = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
RUNNING = (optuna.trial.TrialState.RUNNING,)


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL database URL: CNNMODE_TEST_POSTGRES_URL when set, else a throwaway local server."""
    if os.environ.get("CNNMODE_TEST_POSTGRES_URL"):
        yield os.environ["CNNMODE_TEST_POSTGRES_URL"]
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, createdb) on PATH or in "
                    "/usr/lib/postgresql/*/bin; install Debian's postgresql (.ci/run does)")
    with postgres_server(bin_dir) as url:
        optuna.storages.RDBStorage(driver(url))  # Optuna's tables, made before any command races to make them
        yield url


def driver(url: str) -> str:
    """The URL for this process's own look at the study: SQLAlchemy 2.1 reads postgresql:// as psycopg (3), and
    the requirements pin psycopg2 (`cnnmode search` makes the same choice itself)."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def search_command(tmp_path, base_yaml, url: str, study: str, out: str, *extra: str) -> list[str]:
    """`python -m cnnmode search` for 1-epoch trials of a learning-rate space on the tiny data."""
    space = tmp_path / "space.yaml"
    space.write_text(f"base: {base_yaml}\nfixed: {{train.epochs: 1}}\n"
                     "params:\n  optim.lr: {type: float, low: 0.0005, high: 0.01, log: true}\n")
    return [sys.executable, "-m", "cnnmode", "search", "--space", str(space), "--study", study, "--storage", url,
            "--pruner", "none", "--quiet", "--out", str(tmp_path / out), *extra]


def study_trials(url: str, study: str) -> list:
    """The study's trials as they stand in the database."""
    return optuna.load_study(study_name=study, storage=driver(url)).get_trials(deepcopy=False)


def new_study() -> str:
    """A study name of its own (the database may be a shared one, CNNMODE_TEST_POSTGRES_URL)."""
    return f"s-{uuid.uuid4().hex[:8]}"


def test_jobs_share_the_studys_total_and_run_no_trial_twice(tmp_path, base_yaml, postgres_url):
    study = new_study()
    r = subprocess.run(search_command(tmp_path, base_yaml, postgres_url, study, "s", "--trials", "4", "--jobs", "2"),
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = study_trials(postgres_url, study)
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}, r.stdout
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    run_dirs = {t.user_attrs["run_dir"] for t in trials}
    assert len(run_dirs) == 4 and all((Path(d) / "metrics.json").is_file() for d in run_dirs)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert "workers: 0 (pid" in r.stdout and f"{threads} CPU thread(s) each" in r.stdout
    result = json.loads((tmp_path / "s" / "search.json").read_text())
    assert result["trials"] == 4 and result["states"] == {"complete": 4}
    for name in ("trials.csv", "trials.md", "best.yaml"):
        assert (tmp_path / "s" / name).stat().st_size > 0, name


def kill_a_running_worker(url: str, study: str, launcher: subprocess.Popen, limit_s: float = 180) -> int:
    """SIGKILL the worker of a trial caught running, and return its pid. The worker is stopped (SIGSTOP) first, so
    checking that its trial still runs cannot race the trial's end; if it had just ended, it is let go on."""
    rdb = optuna.storages.RDBStorage(driver(url))
    end = time.monotonic() + limit_s
    while time.monotonic() < end and launcher.poll() is None:
        try:
            study_id = rdb.get_study_id_from_name(study)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for trial in rdb.get_all_trials(study_id, states=RUNNING):
            if "worker" not in trial.user_attrs:
                continue
            pid = int(trial.user_attrs["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.5)  # a state change already sent reaches the database
            if rdb.get_trial(trial._trial_id).state.name == "RUNNING":
                os.kill(pid, signal.SIGKILL)
                return pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.2)
    pytest.fail(f"no running trial to kill; launcher exit code {launcher.poll()}")


def test_a_killed_workers_trial_fails_by_heartbeat_and_the_rest_go_on(tmp_path, base_yaml, postgres_url):
    study = new_study()
    command = search_command(tmp_path, base_yaml, postgres_url, study, "k", "--trials", "4", "--jobs", "2",
                             "--heartbeat", "1,3")
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        killed = kill_a_running_worker(postgres_url, study, launcher)
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, out + err
    assert f"(pid {killed}) was killed by SIGKILL" in out
    trials = study_trials(postgres_url, study)
    assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].user_attrs["worker"].endswith(f":{killed}")
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3 + ["FAIL"]
    result = json.loads((tmp_path / "k" / "search.json").read_text())
    assert result["trials"] == 4 and result["states"] == {"complete": 3, "fail": 1}


def test_the_same_command_on_two_machines_shares_one_study(tmp_path, base_yaml, postgres_url):
    # the README's recipe: the same command on each machine (here twice on this one, each with its own folder)
    study = new_study()
    commands = [search_command(tmp_path, base_yaml, postgres_url, study, f"machine{i}", "--trials", "4")
                for i in range(2)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for c in commands]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = study_trials(postgres_url, study)
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    for i in range(2):  # each command ends once the study is done, so each folder's results cover all of it
        result = json.loads((tmp_path / f"machine{i}" / "search.json").read_text())
        assert result["trials"] == 4 and result["states"] == {"complete": 4}
