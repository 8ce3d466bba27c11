"""Unknown images on a tiny trained model: the score fitted at the end of training, `eval --unknown`, `calibrate`,
and the one-line refusals."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.evaluation.rejection import risk_coverage
from cnnmode.unknowns import load_rejector
from tests.conftest import fast_overrides, run_cli, write_noise


@pytest.fixture(scope="module")
def run(tiny_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reject")
    return train(resolve_config(overrides=fast_overrides(tmp, tiny_tree, **{"train.epochs": 5, "run.name": "u"})),
                 quiet=True)


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    """Images of no class the model knows: uniform noise, in a folder named for no class."""
    return write_noise(tmp_path_factory.mktemp("unknown") / "noise", 24, seed=1)


def test_training_fits_the_score_and_judges_it_on_test(run):
    r = load_rejector(run / "model.pt")
    assert r.score == "combined" and r.coverage == 0.95 and r.index.dtype == torch.float16
    assert len(r.index) == 81  # every training image (fewer than the cap of 5,000), unit rows
    assert torch.allclose(r.index.float().norm(dim=1), torch.ones(81), atol=1e-2)
    assert len(r.held["msp"]) == 9 and all(bool((v[1:] >= v[:-1]).all()) for v in r.held.values())  # sorted
    m = json.loads((run / "metrics.json").read_text())["unknowns"]
    assert m["index_images"] == 81 and m["test"]["threshold"] == 0.95
    assert 0 < m["test"]["coverage"] <= 1 and (run / "eval" / "risk_coverage.png").stat().st_size > 5000


def test_eval_unknown_gives_each_scores_auroc_and_the_share_rejected(run, noise, tmp_path):
    r = run_cli("eval", str(run), "--unknown", str(noise), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "unknown images:" in r.stdout and "AUROC msp" in r.stdout
    m = json.loads((tmp_path / "metrics.json").read_text())["rejection"]
    u = m["unknown"]
    assert u["count"] == 24 and set(u["auroc"]) == {"msp", "knn", "combined"}
    assert u["auroc"]["knn"] > 0.9 and u["rejected"] > 0.5  # noise is far from every shape in embedding space
    assert "known_scores" not in u  # the per-image scores go into the picture only
    assert Image.open(tmp_path / "unknown_scores.png").size[0] > 300


def test_unknown_images_of_known_classes_are_refused_in_one_line(run, tiny_tree):
    r = run_cli("eval", str(run), "--unknown", str(tiny_tree / "test"))
    assert r.returncode == 2 and "classes the model was trained on (circle, square, stripes)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_calibrate_refits_with_its_settings(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    r = run_cli("calibrate", str(copy), "--index-size", "20", "--neighbours", "3", "--score", "knn",
                "--coverage", "0.9")
    assert r.returncode == 0, r.stderr
    assert "3 neighbours among 20 training embeddings" in r.stdout
    fitted = load_rejector(copy / "model.pt")
    assert (fitted.score, fitted.neighbours, len(fitted.index), fitted.coverage) == ("knn", 3, 20, 0.9)


def test_a_model_without_the_score_says_how_to_fit_it(run, tmp_path, tiny_tree):
    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    (copy / "model.unknowns.pt").unlink()
    for args in (("predict", str(copy), str(tiny_tree / "test"), "--reject", "auto"),
                 ("eval", str(copy), "--unknown", str(tiny_tree / "test"))):
        r = run_cli(*args)
        assert r.returncode == 2 and "cnnmode calibrate" in r.stderr, (args, r.stderr)
    r = run_cli("calibrate", str(copy / "model.pt"))
    assert r.returncode == 2 and "--data" in r.stderr


def test_risk_coverage_keeps_the_most_familiar_first():
    coverage, accuracy = risk_coverage(np.array([0.9, 0.1, 0.5, 0.3]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert accuracy.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])


def test_the_stored_auroc_matches_predicts_scores(run, noise, tiny_tree, tmp_path):
    """The max-softmax AUROC of `eval --unknown` equals scikit-learn's on the confidences `predict` reports for the
    same images (eval runs in the run's precision, predict in fp32: equal to a rounding)."""
    from cnnmode.deploy.predict import Predictor

    run_cli("eval", str(run), "--unknown", str(noise), "--out", str(tmp_path))
    stored = json.loads((tmp_path / "metrics.json").read_text())["rejection"]["unknown"]["auroc"]["msp"]
    p = Predictor(run, device="cpu")
    known = [1 - x.confidence for x in p.predict([tiny_tree / "test"], topk=1).predictions]
    unknown = [1 - x.confidence for x in p.predict([noise], topk=1).predictions]
    expected = roc_auc_score([0] * len(known) + [1] * len(unknown), known + unknown)
    assert stored == pytest.approx(expected, abs=0.03)
