"""`cnnmode serve --reject`: a real server answers unknown images with no label, the score, and says so in
/v1/model; a server without the fitted score refuses to start in one line."""
import io
import shutil

import httpx
import numpy as np
from PIL import Image

from tests.conftest import make_image, run_cli
from tests.serve.conftest import start_server


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_unknown_images_get_no_label(served_run):
    proc, url = start_server(served_run, "--threads", "1", "--backend", "eager", "--reject", "auto",
                             "--cache-size", "8")
    try:
        rng = np.random.default_rng(3)
        noise = [_png(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))) for _ in range(6)]
        shapes = [_png(make_image(c, rng)) for c in (0, 1, 2)]
        files = [("files", (f"n{i}.png", b)) for i, b in enumerate(noise)] + \
                [("files", (f"s{i}.png", b)) for i, b in enumerate(shapes)]
        for _ in range(2):  # the second time from the result cache: the score is kept with the probabilities
            body = httpx.post(f"{url}/v1/predict", files=files, timeout=30).json()
            rows = body["predictions"]
            assert all({"label", "unknown", "ood_score"} <= set(r) for r in rows)
            assert all((r["label"] is None) == r["unknown"] for r in rows)
            assert sum(r["unknown"] for r in rows[:6]) >= 5
        info = httpx.get(f"{url}/v1/model").json()
        assert info["reject"]["threshold"] == 0.95 and "combined" in info["reject"]["basis"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_server_asked_to_reject_without_the_score_does_not_start(served_run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(served_run, copy)
    (copy / "model.unknowns.pt").unlink()
    r = run_cli("serve", str(copy), "--reject", "auto", "--port", "1", process=True, timeout=120)
    assert r.returncode == 2 and "cnnmode calibrate" in r.stderr
