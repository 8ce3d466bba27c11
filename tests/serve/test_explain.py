"""POST /v1/explain: a Grad-CAM overlay for one image from a model.pt; a JSON error for everything else."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from cnnmode.deploy.export import export
from tests.conftest import make_image
from tests.serve.test_app import client, png, ready


def _shape(cls: int) -> bytes:
    buf = io.BytesIO()
    make_image(cls, np.random.default_rng(cls)).save(buf, "PNG")
    return buf.getvalue()


def _overlay(answer: dict) -> Image.Image:
    head, data = answer["overlay"].split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def api(served_run):
    with client(served_run) as c:
        yield ready(c)


def test_explain_returns_a_heatmap_over_the_image(api):
    assert api.get("/v1/model").json()["explain"] is True
    r = api.post("/v1/explain", files={"files": ("square.png", _shape(1))})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["file"] == "square.png" and body["method"] == "gradcam" and body["layer"]
    assert body["class"] == body["predicted"] in ("circle", "square", "stripes") and 0 < body["probability"] <= 1
    overlay = _overlay(body)
    assert overlay.size == (224, 224) and overlay.mode == "RGB"
    assert np.asarray(overlay).std() > 5  # a heatmap, not a flat picture


def test_explain_another_class_and_method_by_json(api):
    image = base64.b64encode(_shape(0)).decode()
    for method in ("gradcam", "gradcam++"):
        r = api.post("/v1/explain", json={"images": [image], "method": method, "class": "stripes"})
        assert r.status_code == 200, r.text
        assert r.json()["class"] == "stripes" and r.json()["method"] == method
    one = api.post("/v1/explain", json={"images": [image], "class": "circle"}).json()
    other = api.post("/v1/explain", json={"images": [image], "class": "stripes"}).json()
    assert one["overlay"] != other["overlay"]  # the heatmap follows the class asked about


@pytest.mark.parametrize("kwargs, status, words", [
    ({"json": {"images": [base64.b64encode(png()).decode()], "method": "scorecam"}}, 422,
     "choose one of: gradcam, gradcam++"),
    ({"json": {"images": [base64.b64encode(png()).decode()], "class": "dog"}}, 422, "circle, square, stripes"),
    ({"files": [("files", ("a.png", png())), ("files", ("b.png", png()))]}, 422, "send one image"),
    ({"files": {"files": ("a.txt", b"not an image")}}, 415, "not an image"),
    ({"content": b"{}", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
])
def test_bad_explain_requests_get_a_json_error(api, kwargs, status, words):
    r = api.post("/v1/explain", **kwargs)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert api.post("/v1/explain", files={"files": ("ok.png", png())}).status_code == 200  # still serving


def test_an_exported_file_cannot_be_explained(served_run, tmp_path):
    onnx = export(str(served_run), ["onnx"], out_dir=str(tmp_path))[0]["file"]
    with client(onnx) as c:
        ready(c)
        assert c.get("/v1/model").json()["explain"] is False
        r = c.post("/v1/explain", files={"files": ("a.png", png())})
        assert r.status_code == 501 and "model.pt" in r.json()["error"]
        assert c.post("/v1/predict", files={"files": ("a.png", png())}).status_code == 200
