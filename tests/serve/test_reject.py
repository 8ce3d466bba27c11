"""`cnnmode serve --reject`: a real server answers unknown images with no label, the score, and says so in
/v1/model; a server without the fitted score refuses to start in one line."""
import io
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image

from cnnmode.deploy.predict import Predictor
from tests.conftest import make_image, run_cli
from tests.serve.conftest import start_server


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_unknown_images_get_no_label(served_run, tmp_path):
    """The server's verdicts equal `predict --reject 0.5` on the same files (the same model and score)."""
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]
    images += [make_image(c, rng) for c in (0, 1, 2)]
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    expected = Predictor(served_run, reject="0.5").predict(sorted(tmp_path.glob("*.png"))).predictions
    proc, url = start_server(served_run, "--threads", "1", "--backend", "eager", "--reject", "0.5",
                             "--cache-size", "8")
    try:
        files = [("files", (f"{i}.png", _png(image))) for i, image in enumerate(images)]
        for _ in range(2):  # the second time from the result cache: the score is kept with the probabilities
            rows = httpx.post(f"{url}/v1/predict", files=files, timeout=30).json()["predictions"]
            assert all((r["label"] is None) == r["unknown"] for r in rows)
            assert [r["unknown"] for r in rows] == [p.unknown for p in expected]
            assert [r["ood_score"] for r in rows] == pytest.approx([p.ood_score for p in expected], abs=1e-3)
        info = httpx.get(f"{url}/v1/model").json()
        assert info["reject"]["threshold"] == 0.5 and "combined" in info["reject"]["basis"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_server_asked_to_reject_without_the_score_does_not_start(served_run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(served_run, copy)
    (copy / "model.unknowns.pt").unlink()
    r = run_cli("serve", str(copy), "--reject", "auto", "--port", "1", process=True, timeout=120)
    assert r.returncode == 2 and "cnnmode calibrate" in r.stderr
