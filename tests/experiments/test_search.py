import json
import sqlite3
import subprocess
import sys

import optuna
import pytest

from cnnmode.errors import UsageError
from cnnmode.experiments import search
from cnnmode.experiments.options import SearchOptions
from cnnmode.experiments.search_workers import run_search
from tests.conftest import run_cli


def write_space(tmp_path, base_yaml, params: str, fixed: str = "{train.epochs: 2}"):
    path = tmp_path / "space.yaml"
    path.write_text(f"base: {base_yaml}\nfixed: {fixed}\nparams:\n{params}")
    return path


LR = "  optim.lr: {type: float, low: 0.0005, high: 0.01, log: true}\n"


def test_three_trial_search_with_pruning_writes_best_config_and_plots(tmp_path, base_yaml):
    space = write_space(tmp_path, base_yaml, LR + "  model.width: {type: categorical, choices: [16, 32]}\n")
    out = tmp_path / "s"
    r = run_cli("search", "--space", str(space), "--trials", "3", "--seed", "1", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "search.json").read_text())
    assert result["trials"] == 3 and set(result["states"]) <= {"complete", "pruned"}
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{out / 'study.db'}")
    assert all(t.intermediate_values for t in study.trials)  # every epoch reported to the pruner
    best = (out / "best.yaml").read_text()
    assert f"lr: {study.best_params['optim.lr']}" in best and "val_split: 0.1" in best  # never tuned on test
    for name in ("optimization_history.png", "parallel_coordinate.png", "search.html", "trials.md", "trials.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "cnnmode train --config" in r.stdout


def test_a_pruned_trial_stops_its_run_after_the_reported_epoch(tmp_path, base_yaml, monkeypatch):
    monkeypatch.setattr(search, "make_pruner", lambda name: optuna.pruners.ThresholdPruner(lower=1.01))
    space = write_space(tmp_path, base_yaml, LR, "{train.epochs: 3}")
    r = run_search(SearchOptions(space, trials=1, out=tmp_path / "p"), quiet=True, log=lambda _: None)
    assert r["states"] == {"pruned": 1} and "best_trial" not in r
    history = (tmp_path / "p" / "trial-000" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + epoch 1 of 3
    with pytest.raises(UsageError, match="does not know"):  # another study must not adopt these trial folders
        run_search(SearchOptions(space, trials=1, study="other", out=tmp_path / "p"), log=lambda _: None)


def test_a_trial_that_raises_is_marked_failed_and_the_study_goes_on(tmp_path, base_yaml):
    space = write_space(tmp_path, base_yaml, "  model.pretrained: {type: categorical, choices: ['', /missing.pt]}\n",
                        "{train.epochs: 1}")
    r = run_search(SearchOptions(space, trials=4, seed=0, out=tmp_path / "f"), quiet=True, log=lambda _: None)
    assert r["trials"] == 4 and r["states"].get("fail", 0) >= 1 and r["states"].get("complete", 0) >= 1
    table = (tmp_path / "f" / "trials.md").read_text()
    assert "| fail |" in table and "missing.pt" in table  # the reason is kept
    failed = [p for p in (tmp_path / "f").glob("trial-*") if (p / "error.txt").exists()]
    assert len(failed) == r["states"]["fail"]


def test_two_processes_share_one_sqlite_study(tmp_path, base_yaml):
    space = write_space(tmp_path, base_yaml, LR, "{train.epochs: 1}")
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    args = [sys.executable, "-m", "cnnmode", "search", "--space", str(space), "--trials", "2", "--study", "shared",
            "--storage", db, "--quiet", "--pruner", "none"]
    procs = [subprocess.Popen(args + ["--out", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    rows = sqlite3.connect(tmp_path / "shared.db").execute("select state from trials").fetchall()
    assert len(rows) == 4 and {s for (s,) in rows} == {"COMPLETE"}


def test_space_errors_name_the_problem(tmp_path, base_yaml):
    with pytest.raises(UsageError, match="needs `type:`"):
        search.load_space(write_space(tmp_path, base_yaml, "  optim.lr: {low: 0.1, high: 1}\n"))
    with pytest.raises(UsageError, match="unknown config key 'optim.lrr'"):
        run_search(SearchOptions(write_space(tmp_path, base_yaml, "  optim.lrr: {type: float, low: 0.1, high: 1}\n"),
                                 trials=1, out=tmp_path / "x"), log=lambda _: None)


def test_a_shared_study_holds_exactly_its_planned_trials(tmp_path):
    from cnnmode.experiments import search_workers as workers

    url, lines = f"sqlite:///{tmp_path / 'q.db'}", []
    created = workers.open_queue("q", url, optuna.pruners.NopPruner(), 0, 3, (1, 2), lines.append)
    joined = workers.open_queue("q", url, optuna.pruners.NopPruner(), 1, 5, (1, 2), lines.append)
    assert lines == ["study 'q' plans 3 trials in all; --trials 5 is not used"]
    left = created.ask()  # taken by a worker that is then killed: one heartbeat, then silence
    optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2).record_heartbeat(left._trial_id)
    workers.work_queue(joined, lambda t: t.suggest_float("x", 0, 1), None, (1, 2), [], lines.append)
    assert [t.state.name for t in created.trials] == ["FAIL", "COMPLETE", "COMPLETE"]  # waited for it to go stale
    assert lines[1].startswith("no trial left to start; waiting for trial(s) 0 of other processes")
    with pytest.raises(workers.QueueEmpty):  # the last WAITING trial taken, asking never adds one
        created.ask()
    workers.work_queue(created, lambda t: 0.0, None, (1, 2), [], lines.append)
    assert len(created.trials) == 3


def test_jobs_need_a_database_server_and_name_the_choices(tmp_path, base_yaml):
    from cnnmode.experiments.search_workers import parse_heartbeat

    space = write_space(tmp_path, base_yaml, LR)
    with pytest.raises(UsageError, match="--jobs 2 needs a database server .*postgresql://"):
        run_search(SearchOptions(space, trials=4, jobs=2, out=tmp_path / "j"), log=lambda _: None)
    with pytest.raises(UsageError, match="--jobs needs a number of worker processes of at least 1"):
        run_search(SearchOptions(space, trials=4, jobs=0, storage="postgresql://u@h/db"), log=lambda _: None)
    with pytest.raises(UsageError, match="needs INTERVAL,GRACE"):
        parse_heartbeat("30")
    assert not (tmp_path / "j").exists()  # refused before anything is written


@pytest.mark.parametrize("storage, says", [
    ("bogus://x", "is not a database URL this can open; give sqlite:///FILE"),
    ("postgresql://u@127.0.0.1:1/db", "cannot be opened: .*refused"),
    ("sqlite:////nonexistent/dir/x.db", "cannot be opened: unable to open database file"),
])
def test_a_storage_that_cannot_be_opened_fails_at_once_in_one_line_leaving_no_folder(tmp_path, base_yaml,
                                                                                    storage, says, monkeypatch):
    waits = []
    monkeypatch.setattr(search.time, "sleep", waits.append)
    space = write_space(tmp_path, base_yaml, LR)
    with pytest.raises(UsageError, match=says) as caught:
        run_search(SearchOptions(space, trials=1, storage=storage, out=tmp_path / "s"), log=lambda _: None)
    assert waits == []  # not retried as if it were a lock
    assert "\n" not in str(caught.value) and not (tmp_path / "s").exists()
