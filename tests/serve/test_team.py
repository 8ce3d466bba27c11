"""Serving for a team, against a real server on loopback: API keys (401/403, never logged), rate limits (429 with
Retry-After), two models at once with their own labels, versions swapped under load without a dropped request,
a broken version refused while the old one serves, and raw image bodies."""
import concurrent.futures
import hashlib
import re
import shutil
import threading
import time

import httpx
import pytest
import torch

from tests.serve.conftest import png, start_server

ADMIN_KEY = "admin-key-0123456789abcdef"
READER_KEY = "reader-key-0123456789abcdef"  # may use model `a` only
OTHER_KEY = "other-key-0123456789abcdef"  # given as its sha256 in the file


def relabelled(run, path, names):
    """A copy of a run's model.pt whose classes carry other names (the same weights): a second model whose
    answers are told apart by their labels."""
    blob = torch.load(run / "model.pt", weights_only=True)
    blob["classes"] = names
    torch.save(blob, path)
    return path


@pytest.fixture(scope="module")
def models(served_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("team")
    a = tmp / "a.pt"
    shutil.copy(served_run / "model.pt", a)
    b = relabelled(served_run, tmp / "b.pt", ["red", "green", "blue"])
    keys = tmp / "keys.txt"
    keys.write_text(f"# team keys\n{ADMIN_KEY} admin\n{READER_KEY} a\n"
                    f"sha256:{hashlib.sha256(OTHER_KEY.encode()).hexdigest()} b\n")
    return tmp, a, b, keys


@pytest.fixture(scope="module")
def team(models):
    tmp, a, b, keys = models
    proc, url = start_server([f"a={a}", f"b={b}"], "--threads", "1", "--max-batch-size", "8", "--backend", "eager",
                             "--api-keys", str(keys), "--rate-limit", "1000/second",
                             "--keep-versions", "1")  # a swap retires the old version while requests are inside it
    yield proc, url
    proc.kill()
    proc.wait()


def predict(url, model=None, key=None, header="bearer", **kw):
    headers = {}
    if key:
        headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    path = f"/v1/models/{model}/predict" if model else "/v1/predict"
    return httpx.post(url + path, files=[("files", ("x.png", png(3)))], headers=headers, timeout=30, **kw)


def test_keys_gate_the_api_and_leave_health_open(team):
    proc, url = team
    assert predict(url).status_code == 401
    assert predict(url, "no-such-model").status_code == 401  # no model names for a caller without a key
    assert predict(url, key="not-a-key-at-all-1234").status_code == 401
    assert predict(url, "b", READER_KEY).status_code == 403  # the reader may use a only
    ok = predict(url, "a", READER_KEY)
    assert ok.status_code == 200 and ok.json()["served_as"] == "a"
    assert predict(url, "b", OTHER_KEY, header="x-api-key").status_code == 200  # a key given as its sha256
    assert predict(url, "a", OTHER_KEY).status_code == 403
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
    text = httpx.get(f"{url}/metrics").text  # open without --protect-metrics
    assert re.search(r'cnnmode_refused_total\{reason="unauthorized"\} [3-9]', text)
    assert re.search(r'cnnmode_refused_total\{reason="forbidden"\} [2-9]', text)


def test_two_models_answer_with_their_own_labels_and_are_listed(team):
    _, url = team
    a = predict(url, "a", ADMIN_KEY).json()["predictions"][0]
    b = predict(url, "b", ADMIN_KEY).json()["predictions"][0]
    assert a["label"] in {"circle", "square", "stripes"} and b["label"] in {"red", "green", "blue"}
    assert [c["probability"] for c in a["top"]] == [c["probability"] for c in b["top"]]  # the same weights
    listed = httpx.get(f"{url}/v1/models", headers={"X-API-Key": ADMIN_KEY}).json()
    assert [m["model"] for m in listed["models"]] == ["a", "b"] and listed["needs_key"] is True
    assert predict(url, "c", ADMIN_KEY).status_code == 404
    assert predict(url, "a@7", ADMIN_KEY).status_code == 404
    assert predict(url, None, ADMIN_KEY).json()["served_as"] == "a"  # /v1/predict: the first model


def test_binary_bodies_are_images_too(team):
    _, url = team
    for kind in ("image/png", "application/octet-stream"):
        r = httpx.post(f"{url}/v1/models/a/predict?topk=2", content=png(5),
                       headers={"Content-Type": kind, "X-API-Key": ADMIN_KEY, "X-Filename": "cam.png"})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["file"] == "cam.png" and len(r.json()["predictions"][0]["top"]) == 2
    r = httpx.post(f"{url}/v1/models/a/predict", content=b"not an image",
                   headers={"Content-Type": "image/jpeg", "X-API-Key": ADMIN_KEY})
    assert r.status_code == 415 and "error" in r.json()


def test_a_swap_under_load_answers_every_request_from_exactly_one_version(team, models, served_run):
    """32 clients predict while model b is replaced on disk and loaded again: every request gets 200, its labels
    all come from the version it names, and new requests move to the new version."""
    proc, url = team
    tmp, _, b, _ = models
    before = httpx.get(f"{url}/v1/models/b", headers={"X-API-Key": ADMIN_KEY}).json()["version"]
    stop, answers = threading.Event(), []

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                r = http.post(f"{url}/v1/models/b/predict", files=[("files", ("x.png", png(3)))],
                              headers={"X-API-Key": ADMIN_KEY})
                answers.append((r.status_code, r.json()))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        running = [pool.submit(client) for _ in range(32)]
        time.sleep(1.0)
        relabelled(served_run, tmp / "b2.pt", ["cyan", "magenta", "yellow"]).replace(b)
        swap = httpx.post(f"{url}/v1/models/b/load", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)
        time.sleep(1.0)
        stop.set()
        for f in running:
            f.result()
    assert swap.status_code == 200, swap.text
    assert swap.json()["loaded"]["version"] == before + 1
    labels = {before: {"red", "green", "blue"}, before + 1: {"cyan", "magenta", "yellow"}}
    assert answers and all(code == 200 for code, _ in answers), {code for code, _ in answers}
    for _, body in answers:
        assert {c["class"] for c in body["predictions"][0]["top"]} == labels[body["version"]]
    versions = [body["version"] for _, body in answers]
    assert versions[-1] == before + 1 and before in versions  # traffic moved, and nothing was lost before it


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(team, models):
    _, url = team
    tmp, a, _, _ = models
    good = a.read_bytes()
    serving = httpx.get(f"{url}/v1/models/a", headers={"X-API-Key": ADMIN_KEY}).json()["version"]
    try:
        a.write_bytes(good[:len(good) // 3])  # a truncated upload
        r = httpx.post(f"{url}/v1/models/a/load", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
        assert r.status_code == 409 and f"version {serving} keeps serving" in r.json()["error"]
        assert httpx.post(f"{url}/v1/models/a/load", headers={"X-API-Key": READER_KEY}).status_code == 403
    finally:
        a.write_bytes(good)
    after = predict(url, "a", ADMIN_KEY)
    assert after.status_code == 200 and after.json()["version"] == serving
    assert re.search(r'cnnmode_model_loads_total\{model="a",outcome="failed"\} 1', httpx.get(f"{url}/metrics").text)


def test_a_key_never_appears_in_logs_or_answers(team):
    proc, url = team
    bad = "secret-never-logged-0123456789"
    answers = [predict(url, "a", bad).text, predict(url, "b", READER_KEY).text,
               httpx.get(f"{url}/v1/models", headers={"X-API-Key": bad}).text]
    proc.kill()
    out, err = proc.communicate(timeout=30)
    for secret in (bad, READER_KEY, ADMIN_KEY, OTHER_KEY):
        assert all(secret not in text for text in (*answers, out, err))


def test_rate_limit_answers_429_with_retry_after_per_caller(served_run):
    proc, url = start_server(served_run, "--threads", "1", "--rate-limit", "3/minute", "--backend", "eager")
    try:
        codes = [predict(url).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = predict(url)
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60 and "3 per 1 minute" in r.json()["error"]
        assert 'cnnmode_refused_total{reason="rate_limited"} 2.0' in httpx.get(f"{url}/metrics").text
        assert httpx.get(f"{url}/healthz").status_code == 200  # health is never limited
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("line, says", [("short", "at least 16 characters"), ("sha256:abc", "64 hex digits")])
def test_a_bad_keys_file_is_one_line_naming_the_line_not_the_key(served_run, tmp_path, line, says):
    from tests.conftest import run_cli

    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ADMIN_KEY}\n{line}\n")
    r = run_cli("serve", str(served_run), "--api-keys", str(keys))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "line 2" in r.stderr and says in r.stderr
    assert ADMIN_KEY not in r.stderr


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="SIGHUP is POSIX")
def test_sighup_loads_every_model_again_from_disk(served_run):
    import signal

    proc, url = start_server(served_run, "--threads", "1", "--backend", "eager")
    try:
        proc.send_signal(signal.SIGHUP)
        for _ in range(300):
            listed = httpx.get(f"{url}/v1/models").json()["models"]
            if listed[0]["default_version"] == 2:
                break
            time.sleep(0.1)
        assert listed[0]["default_version"] == 2 and [v["version"] for v in listed[0]["versions"]] == [1, 2]
        assert predict(url).json()["version"] == 2
    finally:
        proc.kill()
        proc.wait()
