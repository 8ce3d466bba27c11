"""Multi-label from data to every verb after training: train on a CSV of label sets, then eval, predict (the
artifact and its ONNX export), video, serve (a real server) and the one-line refusals before any run folder."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from cnnmode.artifact import load_artifact
from cnnmode.deploy.video import classify_frames
from tests.conftest import CLASSES, fast_overrides, make_multilabel_image, run_cli
from tests.serve.conftest import start_server


@pytest.fixture(scope="module")
def multilabel_run(tiny_multilabel, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mlrun")
    r = run_cli("train", *fast_overrides(tmp, tiny_multilabel, **{"train.epochs": 4, "run.name": "ml",
                                                                   "aug.cutmix": 0.5}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "task: multi-label (" in r.stdout and "loss bce" in r.stdout and "test mAP (macro)" in r.stdout
    return tmp / "runs" / "ml"


def test_run_folder_records_label_set_metrics(multilabel_run):
    metrics = json.loads((multilabel_run / "metrics.json").read_text())
    assert metrics["task"] == "multilabel"
    test = metrics["test"]
    assert test["map"] > 0.9 and 0 <= test["subset_accuracy"] <= 1 and 0 <= test["hamming_loss"] <= 1
    assert set(metrics["data"]["counts"]["train"]) == set(CLASSES)
    assert "val_map" in (multilabel_run / "history.csv").read_text().splitlines()[0]
    art = load_artifact(multilabel_run)
    assert art.preprocess["task"] == "multilabel" and len(art.preprocess["thresholds"]) == 3
    report = (multilabel_run / "report.html").read_text()
    assert "Per label" in report and "Average precision per label" in report
    assert "mAP (macro)" in (multilabel_run / "MODEL_CARD.md").read_text()
    for name in ("per_label_ap.png", "pr_curves.png", "error_cooccurrence.png", "predictions.csv"):
        assert (multilabel_run / "eval" / name).stat().st_size > 0


def test_eval_rescores_with_the_stored_thresholds(multilabel_run, tmp_path):
    r = run_cli("eval", str(multilabel_run), "--out", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    first = json.loads((multilabel_run / "eval" / "metrics.json").read_text())
    assert again["map"] == pytest.approx(first["map"]) and again["accuracy"] == pytest.approx(first["accuracy"])


def _images(folder: Path) -> list[str]:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    for name, present in {"both.png": [0, 1], "none.png": [], "stripes.png": [2], "all.png": [0, 1, 2]}.items():
        make_multilabel_image(present, rng).save(folder / name)
    return sorted(p.name for p in folder.iterdir())


def _predicted(multilabel_run, folder: Path, out: Path, *flags: str) -> dict[str, dict]:
    r = run_cli("predict", str(multilabel_run), str(folder), "--out", str(out), *flags)
    assert r.returncode == 0, r.stderr
    return {Path(p["file"]).name: p for p in json.loads(out.read_text())["predictions"]}


def test_predict_returns_the_labels_over_their_thresholds(multilabel_run, tmp_path):
    _images(tmp_path / "in")
    cuts = dict(zip(sorted(CLASSES), load_artifact(multilabel_run).preprocess["thresholds"]))
    rows = _predicted(multilabel_run, tmp_path / "in", tmp_path / "p.json")
    for row in rows.values():
        assert set(row["probs"]) == set(CLASSES)
        assert sorted(row["labels"]) == sorted(c for c, p in row["probs"].items() if p >= cuts[c])
        assert row["label"] == (max(row["labels"], key=row["probs"].get) if row["labels"] else None)
    assert sum(len(r["labels"]) for r in rows.values()) >= 3  # the trained model finds shapes
    low = _predicted(multilabel_run, tmp_path / "in", tmp_path / "t.json", "--threshold", "0.000001")
    assert all(sorted(r["labels"]) == sorted(CLASSES) for r in low.values())  # the override lets every label in


def test_onnx_export_answers_the_same_label_sets(multilabel_run, tmp_path):
    _images(tmp_path / "in")
    want = {n: sorted(r["labels"]) for n, r in _predicted(multilabel_run, tmp_path / "in", tmp_path / "p.json").items()}
    r = run_cli("export", str(multilabel_run), "--format", "onnx")
    assert r.returncode == 0, r.stderr
    onnx = multilabel_run / "export" / "model.onnx"
    assert json.loads(onnx.with_name("preprocess.json").read_text())["task"] == "multilabel"
    r = run_cli("predict", str(onnx), str(tmp_path / "in"), "--out", str(tmp_path / "o.csv"))
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert lines[0] == "file,labels,p_circle,p_square,p_stripes"
    got = {Path(line.split(",")[0]).name: sorted(filter(None, line.split(",")[1].split(";"))) for line in lines[1:]}
    assert got == want


def test_video_draws_every_label_present(multilabel_run, tmp_path):
    names = _images(tmp_path / "in")
    want = {n: r["labels"] for n, r in _predicted(multilabel_run, tmp_path / "in", tmp_path / "p.json").items()}
    frames = [cv2.imread(str(tmp_path / "in" / n)) for n in names]
    results = list(classify_frames(frames, multilabel_run, batch_size=3))
    assert [[c for c, _ in r.labels] for r in results] == [want[n] for n in names]
    from cnnmode.deploy.video.overlay import draw

    blank = np.zeros((240, 320, 3), np.uint8)
    two = draw(blank.copy(), results[0].top, 0.5, labels=[("circle", 0.9), ("square", 0.8)])
    one = draw(blank.copy(), results[0].top, 0.5, labels=[("circle", 0.9)])
    assert (two[24:40] > 0).any() and not (one[24:40] > 0).any()  # a second line for the second label
    assert cv2.countNonZero(cv2.cvtColor(draw(blank.copy(), results[0].top, 0.5, labels=[]), cv2.COLOR_BGR2GRAY))


def test_serve_answers_label_sets(multilabel_run, tmp_path):
    names = _images(tmp_path / "in")
    want = {n: sorted(r["labels"]) for n, r in _predicted(multilabel_run, tmp_path / "in", tmp_path / "p.json").items()}
    proc, url = start_server(multilabel_run, "--threads", "1")
    try:
        info = httpx.get(f"{url}/v1/model").json()
        assert info["preprocess"]["task"] == "multilabel" and len(info["preprocess"]["thresholds"]) == 3
        files = [("files", (n, (tmp_path / "in" / n).read_bytes(), "image/png")) for n in names]
        body = httpx.post(f"{url}/v1/predict", files=files, timeout=30).json()
        assert {p["file"]: sorted(p["labels"]) for p in body["predictions"]} == want
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("extra, message", [
    ({"train.loss": "focal"}, "train.loss=focal is a softmax loss (one class per image) and this data is multi-label"),
    ({"data.task": "single"}, "data.task=single needs exactly one class name per row"),
    ({"train.qat": "true"}, "train.qat checks int8 accuracy as single-label top-1 and this data is multi-label"),
])
def test_keys_that_cannot_apply_are_refused_before_a_run_folder(tiny_multilabel, tmp_path, extra, message):
    r = run_cli("train", *fast_overrides(tmp_path, tiny_multilabel, **extra))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _gradients(folder: Path) -> Path:
    """Six images unlike any training image (the training images are noise with shapes): smooth gradients."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
    for i in range(6):
        cv2.imwrite(str(folder / f"g{i}.png"), np.roll(ramp, 5 * i, axis=1))
    return folder


def test_label_sets_answer_unknown_for_images_unlike_the_training_data(multilabel_run, tmp_path):
    metrics = json.loads((multilabel_run / "metrics.json").read_text())
    assert metrics["unknowns"]["score"] == "knn" and (multilabel_run / "model.unknowns.pt").is_file()
    assert "with no labels (the knn score" in (multilabel_run / "MODEL_CARD.md").read_text()
    _gradients(tmp_path / "odd")
    _images(tmp_path / "known")
    r = run_cli("predict", str(multilabel_run), str(tmp_path / "odd"), str(tmp_path / "known"), "--reject", "auto",
                "--backend", "eager", "--out", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    odd = [row for row in rows if "/odd/" in row["file"]]
    known = [row for row in rows if "/known/" in row["file"]]
    assert sum(row["unknown"] and row["labels"] == [] and row["label"] is None for row in odd) >= 5  # 6 of 6 seen
    assert sum(not row["unknown"] for row in known) >= 3  # 4 of 4 seen
    csv_out = run_cli("predict", str(multilabel_run), str(tmp_path / "odd"), "--reject", "auto", "--backend", "eager",
                      "--out", str(tmp_path / "p.csv"))
    assert csv_out.returncode == 0 and (tmp_path / "p.csv").read_text().startswith("file,labels,unknown,ood_score,")

    # the k-NN score needs the embedding: another backend is refused in one line, naming the ones that give it
    other = run_cli("predict", str(multilabel_run), str(tmp_path / "odd"), "--reject", "auto", "--backend", "openvino")
    assert other.returncode == 2 and "--backend eager" in other.stderr and other.stderr.count("\n") == 1
    msp = run_cli("calibrate", str(multilabel_run), "--score", "msp")
    assert msp.returncode == 2 and "--score knn" in msp.stderr

    proc, url = start_server(multilabel_run, "--threads", "1", "--backend", "eager", "--reject", "auto")
    try:
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((tmp_path / "odd").iterdir())]
        answered = httpx.post(f"{url}/v1/predict", files=files, timeout=30).json()["predictions"]
        assert sum(p["unknown"] and p["labels"] == [] for p in answered) >= 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)
