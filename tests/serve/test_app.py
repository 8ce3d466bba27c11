"""The app in-process (Starlette's TestClient runs the real lifespan): every endpoint, every limit, JSON errors."""
import base64
import io
import struct
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnmode.deploy.runtime import auto_backend
from cnnmode.serve import ServeOptions, create_app


def png(color=(250, 200, 40), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def png_bomb() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(2500))) + chunk(b"IEND", b""))


def client(run, **options) -> TestClient:
    return TestClient(create_app(ServeOptions(target=str(run), threads=1, **options)))


def ready(c: TestClient) -> TestClient:
    for _ in range(200):
        if c.get("/readyz").status_code == 200:
            return c
        time.sleep(0.05)
    raise AssertionError("never ready")


@pytest.fixture(scope="module")
def api(served_run):
    with client(served_run, max_wait_ms=2) as c:
        yield ready(c)


def test_health_model_and_metrics(api, served_run):
    assert api.get("/healthz").json() == {"status": "live"}
    info = api.get("/v1/model").json()
    assert info["classes"] == ["circle", "square", "stripes"]
    assert info["backend"] == auto_backend("cpu", can_calibrate=True)[0]  # the default: auto, as this CPU's row says
    assert info["name"] == "simplecnn" and info["file"] == "model.pt"  # never the server's own path
    assert info["checksum"].startswith("sha256:") and info["preprocess"]["img_size"] == 32
    assert api.get("/readyz").json()["warmed_batch_sizes"] == [1, 2, 4, 8, 16, 32]
    assert "cnnmode_batch_size_bucket" in api.get("/metrics").text
    assert "<title>CNN Mode</title>" in api.get("/").text


def test_predict_multipart_and_base64(api):
    r = api.post("/v1/predict", files=[("files", ("a.png", png())), ("files", ("b.png", png((20, 30, 200))))],
                 data={"topk": "2"})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == ["a.png", "b.png"] and all(len(p["top"]) == 2 for p in preds)
    assert all(p["top"][0]["probability"] >= p["top"][1]["probability"] for p in preds)
    r = api.post("/v1/predict", json={"images": [base64.b64encode(png()).decode()] * 3, "topk": 1, "threshold": 1.0})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    assert all(p["uncertain"] for p in r.json()["predictions"])  # nothing reaches probability 1.0


def test_a_bad_image_fails_only_its_own_entry(api):
    r = api.post("/v1/predict", files=[("files", ("good.png", png())), ("files", ("bad.jpg", b"not an image"))])
    preds = r.json()["predictions"]
    assert r.status_code == 200 and "top" in preds[0] and preds[1]["status"] == 415 and "error" in preds[1]
    single = api.post("/v1/predict", files=[("files", ("bad.jpg", b"not an image"))])
    assert single.status_code == 415 and "bad.jpg" in single.json()["error"]
    assert api.post("/v1/predict", files=[("files", ("ok.png", png()))]).status_code == 200  # still serving


@pytest.mark.parametrize("kwargs, status", [
    ({"files": [("files", ("bomb.png", png_bomb()))]}, 413),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
    ({"json": {"pictures": []}}, 422),
    ({"json": {"images": ["%%%"]}}, 422),
    ({"json": {"images": []}}, 422),
    ({"files": [("files", ("a.png", png()))], "data": {"topk": "0"}}, 422),
    ({"files": [("files", ("a.png", png()))], "data": {"threshold": "2"}}, 422),
])
def test_bad_requests_get_a_json_error(api, kwargs, status):
    r = api.post("/v1/predict", **kwargs)
    assert r.status_code == status and set(r.json()) == {"error"}, r.text


def test_body_limit_queue_limit_and_deadline(served_run):
    with client(served_run, max_body_mb=0.01) as c:
        r = ready(c).post("/v1/predict", files=[("files", ("big.png", png(size=400) + bytes(20_000)))])
        assert r.status_code == 413 and "max-body-mb" in r.json()["error"]
    with client(served_run, max_queue=2) as c:
        r = ready(c).post("/v1/predict", json={"images": [base64.b64encode(png()).decode()] * 3})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    with client(served_run, timeout_s=0.001, max_wait_ms=200) as c:
        r = ready(c).post("/v1/predict", files=[("files", ("a.png", png()))])
        assert r.status_code == 504 and "timeout" in r.json()["error"]


def test_not_ready_until_warm(served_run, monkeypatch):
    from cnnmode.serve import model as served_model
    slow = served_model.ServedModel.warm
    monkeypatch.setattr(served_model.ServedModel, "warm", lambda self: (time.sleep(0.5), slow(self)))
    with client(served_run) as c:
        assert c.get("/readyz").status_code == 503
        assert c.post("/v1/predict", files=[("files", ("a.png", png()))]).status_code == 503
        assert ready(c).post("/v1/predict", files=[("files", ("a.png", png()))]).status_code == 200


def test_results_cache(served_run):
    with client(served_run, cache_size=4) as c:
        ready(c)
        first = c.post("/v1/predict", files=[("files", ("a.png", png()))]).json()["predictions"]
        again = c.post("/v1/predict", files=[("files", ("b.png", png()))]).json()["predictions"]
        assert first[0]["top"] == again[0]["top"]
        assert 'cnnmode_images_total{model="default",version="1"} 1.0' in c.get("/metrics").text  # the second answer came from the cache


@pytest.mark.parametrize("body", [{"topk": 2.5}, {"topk": True}, {"topk": "3"}, {"threshold": True}])
def test_json_numbers_are_numbers(api, body):
    """#30 item 22: a fraction, a boolean or a string is not a whole number."""
    r = api.post("/v1/predict", json={"images": [base64.b64encode(png()).decode()]} | body)
    assert r.status_code == 422 and "error" in r.json()


def test_multipart_limits_and_malformed_bodies_get_the_documented_codes(api):
    """#30 item 22: too many files is 413 (as --max-images says), a malformed body 422; both are counted."""
    many = [("files", (f"{i}.png", png())) for i in range(65)]
    r = api.post("/v1/predict", files=many)
    assert r.status_code == 413 and "--max-images" in r.json()["error"]
    r = api.post("/v1/predict", content=b"--xyz\r\nnot a part", headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 422 and "malformed" in r.json()["error"]
    assert api.get("/v1/predict").status_code == 405
    text = api.get("/metrics").text
    assert 'status="405",' in text and 'status="413",' in text


def test_a_huge_image_is_refused_with_the_servers_own_limit(api):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # 400 M pixels, a few KB: over Pillow's own bomb cap
    r = api.post("/v1/predict", files={"files": ("big.png", buf.getvalue())})
    assert r.status_code == 413 and "--max-pixels" in r.json()["error"]
