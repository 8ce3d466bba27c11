import json

import numpy as np
import pytest

from cnnmode.deploy.predict import Predictor, write_results
from cnnmode.errors import UsageError
from tests.conftest import make_image, run_cli


@pytest.fixture
def odd_images(tmp_path):
    """The same kind of picture in several modes, sizes and formats, plus broken files."""
    rng = np.random.default_rng(0)
    make_image(0, rng, 32).save(tmp_path / "rgb.png")
    make_image(1, rng, 200).resize((300, 180)).save(tmp_path / "big.jpg", quality=90)
    make_image(2, rng, 64, "L").save(tmp_path / "gray.png")
    make_image(0, rng, 48, "RGBA").save(tmp_path / "rgba.png")
    make_image(1, rng, 40, "P").save(tmp_path / "palette.gif")
    img = make_image(2, rng, 64)
    exif = img.getexif()
    exif[0x0112] = 6  # rotated: exif_transpose must apply it
    img.save(tmp_path / "rotated.jpg", exif=exif)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


def test_predict_any_mode_and_size(trained_run, odd_images):
    results = Predictor(trained_run).predict([odd_images], topk=2, threshold=0.99)
    assert len(results.predictions) == 6 and len(results.failed) == 2
    assert {f.split("/")[-1] for f, _ in results.failed} == {"broken.jpg", "empty.png"}
    for p in results.predictions:
        assert len(p.top) == 2 and p.top[0][1] >= p.top[1][1] and p.uncertain == (p.confidence < 0.99)
        assert p.label in ("circle", "square", "stripes")


def test_predictions_match_evaluation(trained_run, tiny_tree):
    import csv
    results = Predictor(trained_run).predict([tiny_tree / "test"], topk=1)
    by_file = {p.file.split("test/")[-1]: p.label for p in results.predictions}
    rows = {r["path"].split("test/")[-1]: r["predicted"] for r in csv.DictReader(
        (trained_run / "eval" / "predictions.csv").open())}
    agree = np.mean([by_file[k] == v for k, v in rows.items()])
    assert len(by_file) == 30 and agree >= 0.9  # eval used bf16 autocast; predict runs fp32


def test_csv_and_json_output(trained_run, odd_images, tmp_path):
    results = Predictor(trained_run).predict([odd_images / "rgb.png", odd_images / "broken.jpg"], topk=3)
    write_results(results, tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data["predictions"]) == 1 and len(data["failed"]) == 1 and len(data["predictions"][0]["top"]) == 3
    write_results(results, tmp_path / "p.csv")
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header.startswith("file,label,confidence,uncertain,top1,prob1")
    with pytest.raises(UsageError, match=".csv or .json"):
        write_results(results, tmp_path / "p.txt")


def test_predict_cli(trained_run, odd_images, tmp_path):
    result = run_cli("predict", str(trained_run / "model.pt"), str(odd_images / "*.png"), "--topk", "2",
                     "--out", str(tmp_path / "o.csv"), cwd=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "backend eager on cpu"  # --device auto: no GPU here
    assert "3 predicted, 1 failed" in result.stdout and "empty.png" in result.stderr
    missing = run_cli("predict", str(trained_run / "model.pt"), str(tmp_path / "nothing-here.png"))
    assert missing.returncode == 2 and "no such image" in missing.stderr
    for device, why in (("cuda", "no CUDA GPU"), ("tpu", "choose auto, cpu, cuda, cuda:N or mps")):
        wrong = run_cli("predict", str(trained_run / "model.pt"), str(odd_images), "--device", device)
        assert wrong.returncode == 2 and why in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_predict_on_another_backend_names_it_and_agrees(trained_run, odd_images):
    result = run_cli("predict", str(trained_run), str(odd_images), "--backend", "openvino", "--out",
                     str(odd_images / "ov.json"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "backend openvino on cpu"
    reference = {p.file: p.label for p in Predictor(trained_run).predict([odd_images]).predictions}
    rows = json.loads((odd_images / "ov.json").read_text())["predictions"]
    assert reference and {r["file"]: r["label"] for r in rows} == reference
