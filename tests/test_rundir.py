"""RunDir names a run folder's files; resolve_target turns "a run folder or a model file" into paths."""
import pytest

from cnnmode.errors import UsageError
from cnnmode.rundir import RunDir, resolve_target


def test_run_folder_names_and_states(tmp_path):
    run = RunDir(tmp_path / "r")
    assert (run.config.name, run.model.name, run.last.name, run.metrics.name) == \
        ("config.yaml", "model.pt", "last.pt", "metrics.json")
    assert not run.is_run() and not run.is_resumable() and not run.is_finished()
    run.path.mkdir()
    for f in (run.config, run.last, run.metrics, run.model, run.report):
        f.write_text("x")
    assert run.is_run() and run.is_resumable() and run.is_finished()


def test_targets_resolve_to_a_file_and_maybe_a_run(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(UsageError, match="no artifact at"):
        resolve_target(run.path)
    run.model.write_text("x")
    bare = resolve_target(run.path)  # a folder with a model.pt but no config: no data to remember
    assert bare.file == run.model and bare.run is None and bare.home == run.path
    run.config.write_text("x")
    target = resolve_target(run.path)
    assert target.run == run and target.home == run.path
    file_target = resolve_target(run.model)
    assert file_target.file == run.model and file_target.run is None
    with pytest.raises(UsageError, match="no model at"):
        resolve_target(tmp_path / "missing.pt")
