"""--reject in predict, video and exported files: unknown images get no label, every row says why."""
import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from cnnmode.deploy.predict import Predictor
from cnnmode.deploy.video import classify_frames
from cnnmode.deploy.runtime import load_runner
from tests.conftest import run_cli, write_noise


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    return write_noise(tmp_path_factory.mktemp("noise") / "noise", 8, seed=2)


def test_predict_marks_unknown_images_and_leaves_them_without_a_label(trained_run, noise, tiny_tree, tmp_path):
    out = tmp_path / "p.json"
    r = run_cli("predict", str(trained_run), str(noise), str(tiny_tree / "test" / "circle"), "--reject", "auto",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "unknown images by the combined score, rejecting above 0.95" in r.stdout and "(ood 0." in r.stdout
    rows = json.loads(out.read_text())["predictions"]
    assert all(set(row) >= {"unknown", "ood_score"} and 0 <= row["ood_score"] <= 1 for row in rows)
    assert all((row["label"] is None) == row["unknown"] for row in rows)
    assert all(row["unknown"] == (row["ood_score"] > 0.95) for row in rows)


def test_predict_csv_and_reject_off(trained_run, noise, tmp_path):
    out = tmp_path / "p.csv"
    assert run_cli("predict", str(trained_run), str(noise), "--reject", "0.5", "--out", str(out)).returncode == 0
    rows = list(csv.DictReader(out.open()))
    assert {"unknown", "ood_score"} <= set(rows[0]) and all((r["label"] == "") == (r["unknown"] == "1") for r in rows)
    plain = Predictor(trained_run).predict([noise])
    assert all(p.unknown is None and p.ood_score is None for p in plain.predictions)
    r = run_cli("predict", str(trained_run), str(noise), "--reject", "sometimes")
    assert r.returncode == 2 and "choose auto, off or a threshold" in r.stderr


def test_a_backend_without_embeddings_rejects_by_max_softmax(trained_run, noise):
    p = Predictor(trained_run, backend="onnxruntime", reject="auto")
    assert "max-softmax only" in p.runner.reject_note
    eager = Predictor(trained_run, reject="auto")
    a, b = p.predict([noise]).predictions, eager.predict([noise]).predictions
    assert all(x.ood_score is not None for x in a) and [x.label for x in a] == [x.label for x in b]


def test_export_carries_max_softmax_rejection(trained_run, noise, tmp_path):
    r = run_cli("export", str(trained_run), "--format", "onnx", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "stays with the artifact in the PyTorch runtime" in r.stdout
    meta = json.loads((tmp_path / "preprocess.json").read_text())
    assert meta["reject"]["score"] == "msp" and "index" not in meta["reject"]
    exported = Predictor(tmp_path / "model.onnx", reject="auto").predict([noise]).predictions
    eager = Predictor(trained_run, backend="eager", reject="auto")
    eager.runner.features = None  # the artifact judged by max-softmax alone, as the exported file is
    step = 1 / len(eager.runner.rejector.held["msp"])  # ONNX's logits differ in the last digits: one rank at most
    assert [x.ood_score for x in exported] == pytest.approx([x.ood_score for x in eager.predict([noise]).predictions],
                                                            abs=step + 1e-3)


def test_video_labels_unknown_frames(trained_run, noise, tmp_path):
    frames = [cv2.cvtColor(np.asarray(Image.open(f)), cv2.COLOR_RGB2BGR) for f in sorted(noise.iterdir())]
    runner = load_runner(trained_run)
    results = list(classify_frames(frames, runner, batch_size=4, reject_at=0.5))
    expected = Predictor(trained_run, reject="0.5").predict(sorted(noise.iterdir())).predictions
    assert [r.unknown for r in results] == [p.unknown for p in expected]
    assert [r.ood_score for r in results] == pytest.approx([p.ood_score for p in expected], abs=1e-3)
    plain = list(classify_frames(frames, runner, batch_size=4))
    assert [r.top for r in plain] == [r.top for r in results] and not any(r.unknown for r in plain)
    clip = tmp_path / "noise.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for f in frames:
        writer.write(f)
    writer.release()
    table = tmp_path / "v.csv"
    r = run_cli("video", str(trained_run), "--source", str(clip), "--csv", str(table), "--reject", "auto",
                "--backend", "eager", "--output", str(tmp_path / "out.avi"))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 8 and {"unknown", "ood_score"} <= set(rows[0])
