"""Knowledge distillation: train a student model from a teacher artifact, and compare the two."""
from __future__ import annotations

import json
from pathlib import Path

from cnnmode.artifact import load_artifact
from cnnmode.config import pick_base, resolve_config
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir, resolve_target
from cnnmode.workflows.train import train


def distill(teacher: str, student: str, recipe: str | None = None, config_file: str | None = None,
            overrides: list[str] | tuple[str, ...] = (), quiet: bool = False) -> tuple[Path, dict]:
    """Train `student` (a model name) with the train.distill_* keys against `teacher` (an artifact or run folder).

    Starts from the teacher run's config unless a recipe or config file is given (then from that; with
    neither and no teacher config, from the `default` recipe). Writes distill.json in the student's run folder
    and returns (run folder, {"teacher": ..., "student": ...}).
    """
    where = resolve_target(teacher)
    teacher_art = load_artifact(where)  # fail early on a bad teacher
    base = pick_base(recipe, config_file) or (str(where.run.config) if where.run is not None else "default")
    keys = [f"model.name={student}", f"train.distill_teacher={teacher}", "model.pretrained=", "model.freeze=none",
            "train.unfreeze_at=0", "run.name=", *overrides]
    run = RunDir(train(resolve_config(base, keys), quiet=quiet))
    student_art = load_artifact(run.path)
    rows = {"teacher": {"model": teacher_art.name, "test_accuracy": teacher_art.meta.get("test", {}).get("accuracy"),
                        "params": teacher_art.params},
            "student": {"model": student_art.name, "test_accuracy": student_art.meta["test"]["accuracy"],
                        "params": student_art.params}}
    atomic_write_text(run.path / "distill.json", json.dumps(rows, indent=2))
    return run.path, rows
