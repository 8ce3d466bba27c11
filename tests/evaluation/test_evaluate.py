"""Evaluation on a tiny trained model: numbers equal scikit-learn's, every plot is a real picture."""
import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.errors import UsageError
from cnnmode.evaluation.evaluate import PLOTS, run_eval
from cnnmode.evaluation.metrics import compute_metrics, expected_calibration_error
from tests.conftest import fast_overrides, run_cli, write_tree


@pytest.fixture(scope="module")
def run(tiny_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    return train(resolve_config(overrides=fast_overrides(tmp, tiny_tree, **{"train.epochs": 2, "run.name": "e"})),
                 quiet=True)


def test_metrics_equal_sklearn_on_predictions_csv(run):
    m = json.loads((run / "eval" / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "eval" / "predictions.csv").open()))
    classes = list(m["per_class"])
    y = np.array([classes.index(r["true"]) for r in rows])
    p = np.array([classes.index(r["predicted"]) for r in rows])
    assert len(rows) == m["count"] == 30 and rows[0]["path"].startswith("test/")
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    assert m["precision_weighted"] == pytest.approx(skm.precision_score(y, p, average="weighted", zero_division=0))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(y, p, average="macro", zero_division=0))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, p).tolist()
    assert m["loss"] == pytest.approx(-np.mean(np.log([float(r["true_prob"]) for r in rows])), rel=1e-4)
    top5 = [r["true"] in r["top5_labels"].split("|") for r in rows]
    assert m["top5"] == pytest.approx(np.mean(top5))
    for c, v in m["per_class"].items():
        mask = y == classes.index(c)
        assert v["accuracy"] == pytest.approx((p[mask] == y[mask]).mean()) and v["support"] == mask.sum()
    assert all(0 <= m[k] <= 1 for k in ("accuracy", "top5", "f1_macro", "f1_weighted", "ece"))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["test"]["accuracy"] == m["accuracy"]


def test_report_text_and_pairs(run):
    text = (run / "eval" / "classification_report.txt").read_text()
    assert "precision" in text and "circle" in text and "macro avg" in text
    m = json.loads((run / "eval" / "metrics.json").read_text())
    for pair in m["top_confused"]:
        assert pair["true"] != pair["predicted"] and 0 < pair["share"] <= 1


def test_ece_against_direct_computation():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1, 1000)
    correct = rng.uniform(size=1000) < conf ** 2
    ece, bins = expected_calibration_error(conf, correct, 15)
    direct = sum(abs(correct[(conf > lo) & (conf <= lo + 1 / 15)].mean() - conf[(conf > lo) & (conf <= lo + 1 / 15)].mean())
                 * ((conf > lo) & (conf <= lo + 1 / 15)).sum() for lo in np.linspace(0, 1, 16)[:-1]
                 if ((conf > lo) & (conf <= lo + 1 / 15)).any()) / 1000
    assert ece == pytest.approx(direct) and sum(b["count"] for b in bins) == 1000


def test_perfect_predictions():
    probs = np.eye(3)[[0, 1, 2, 0]] * 0.97 + 0.01
    m = compute_metrics(np.array([0, 1, 2, 0]), probs, ["a", "b", "c"])
    assert m["accuracy"] == 1 and m["top_confused"] == [] and m["f1_macro"] == 1


@pytest.mark.parametrize("name", PLOTS)
def test_every_plot_is_a_non_blank_png(run, name):
    img = np.asarray(Image.open(run / "eval" / name).convert("L"), dtype=float)
    assert img.shape[0] > 150 and img.shape[1] > 150 and img.std() > 10


def test_eval_verb_on_artifact_with_data(run, tiny_tree, tmp_path):
    result = run_cli("eval", str(run / "model.pt"), "--data", str(tiny_tree), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and result.stdout.strip().endswith(f"eval: {tmp_path / 'o'}")
    for name in ("metrics.json", "predictions.csv", "classification_report.txt", *PLOTS):
        assert (tmp_path / "o" / name).is_file(), name
    ours = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert ours["accuracy"] == json.loads((run / "eval" / "metrics.json").read_text())["accuracy"]


def test_eval_refuses_other_class_set(run, tmp_path):
    other = write_tree(tmp_path / "other", {"train": 3, "test": 2})
    shutil.move(other / "train" / "circle", other / "train" / "oval")
    shutil.move(other / "test" / "circle", other / "test" / "oval")
    with pytest.raises(UsageError, match=r"trained on classes \['circle'.*has \['oval'"):
        run_eval(str(run / "model.pt"), data=str(other), out=str(tmp_path / "x"))


def test_artifact_file_needs_data(run):
    with pytest.raises(UsageError, match="needs --data"):
        run_eval(str(run / "model.pt"))


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars"]


def test_report_renders_in_chromium(run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    page = (run / "report.html").resolve().as_uri()
    flags = CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    for heading in ("CNN Mode report", "Training curves", "Metrics", "Evaluation plots", "Misclassified gallery",
                    "Configuration"):
        assert heading in dom
    assert dom.count("data:image/png;base64,") >= 9
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,2400", page],
                   capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert img.shape[:2] == (2400, 1280)
    colored = (img.max(2) - img.min(2) > 40).mean()  # plots are colourful; a blank or text-only page is not
    assert img.std() > 20 and colored > 0.01
