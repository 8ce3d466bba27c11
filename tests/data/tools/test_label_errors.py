"""`cnnmode data labels`: out-of-fold predictions of a real (tiny) cv study ranked with cleanlab, the CSV and
picture, --fix and restore, and the one-line refusals."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from cnnmode.data.tools import restore
from cnnmode.data.tools.label_errors import HeldOut, held_out, quarantine_suspects, rank_label_errors
from cnnmode.errors import UsageError
from tests.conftest import fast_overrides, run_cli, write_tree
from tests.data.tools.test_check import tree_digest


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The shapes tree with 3 circles filed under square."""
    root = write_tree(tmp_path_factory.mktemp("noisy") / "shapes", {"train": 30, "test": 6})
    for i in range(3):
        (root / "train" / "circle" / f"{i:04d}.png").rename(root / "train" / "square" / f"flip{i}.png")
    return root


@pytest.fixture(scope="module")
def study(noisy, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    r = run_cli("cv", "--folds", "3", "--out", str(tmp / "cv"), "--quiet",
                *[o for o in fast_overrides(tmp, noisy, **{"train.epochs": 4}) if not o.startswith("run.")])
    assert r.returncode == 0, r.stderr
    return tmp / "cv"


def test_every_training_image_gets_one_out_of_fold_prediction(study, noisy):
    held = held_out(study)
    assert held.covered == "all 90 training images (3 folds)" and len(set(held.names)) == 90
    assert held.probs.shape == (90, 3) and np.allclose(held.probs.sum(1), 1, atol=1e-4)
    assert {n.split("/")[-1] for n in held.names} >= {"flip0.png", "flip1.png", "flip2.png"}


def test_the_cli_writes_the_ranking_and_picture_and_fix_is_undone(study, noisy, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(noisy, data)
    before = tree_digest(data)
    r = run_cli("data", "labels", str(study), str(data), "--out", str(tmp_path / "out"), "--fix", str(tmp_path / "q"))
    assert r.returncode == 0, r.stderr
    assert "likely label errors among all 90 training images (3 folds)" in r.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "label_issues.csv").open()))
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores)
    if rows:
        assert (tmp_path / "out" / "suspects.png").stat().st_size > 5000
        assert f"moved {len(rows)} files" in r.stdout
        assert all(not (data / row["file"]).exists() for row in rows)
        restore(tmp_path / "q")
    assert tree_digest(data) == before


def test_confident_learning_ranks_the_least_likely_given_labels_first():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.1, 0.9], [0.2, 0.8], [0.15, 0.85], [0.95, 0.05],
                      [0.05, 0.95], [0.7, 0.3], [0.3, 0.7]])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1])  # the last two with 0.7 for their label: fine
    held = HeldOut([f"f{i}" for i in range(10)], labels, probs, ["a", "b"], "nowhere", "")
    issues = rank_label_errors(held)
    found = {r["file"]: (r["given"], r["suggested"], r["score"]) for r in issues}
    assert found == {"f6": ("b", "a", pytest.approx(0.05)), "f7": ("a", "b", pytest.approx(0.05))}


def test_a_study_that_does_not_cover_its_data_is_refused(study, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(study, partial)
    shutil.rmtree(partial / "fold-1")
    with pytest.raises(UsageError, match="does not cover its data once: 2 fold folders of 3"):
        held_out(partial)
    (partial / "fold-0" / "eval" / "heldout.npz").unlink()
    r = run_cli("data", "labels", str(partial))
    assert r.returncode == 2 and "no held-out predictions" in r.stderr


def test_a_single_run_covers_its_held_out_images(study):
    held = held_out(study / "fold-0")
    assert held.covered == "the run's 30 held-out images of 90"


def test_fix_needs_a_folder(tmp_path):
    with pytest.raises(UsageError, match="class-folder tree"):
        quarantine_suspects([{"file": "train/a/x.png", "given": "a", "suggested": "b", "score": 0.1}],
                            str(tmp_path / "data.tar.gz"), tmp_path / "q")
