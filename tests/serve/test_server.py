"""The real `cnnmode serve` in a subprocess on a free loopback port: batching under concurrent load, the cap,
graceful shutdown, and a model that cannot be loaded."""
import concurrent.futures
import io
import re
import signal
import time

import httpx
from PIL import Image

from tests.conftest import run_cli
from tests.serve.conftest import free_port, png, start_server


def _predict(url: str, i: int):
    try:
        return httpx.post(f"{url}/v1/predict", files={"files": (f"{i}.png", png(i))}, timeout=30).status_code
    except httpx.ConnectError:
        return "refused"


def test_concurrent_requests_are_batched_within_the_cap(server):
    proc, url = server
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(lambda i: _predict(url, i), range(48)))
    assert codes == [200] * 48
    text = httpx.get(f"{url}/metrics").text
    count = float(re.search(r"^cnnmode_batch_size_count\{[^}]*\} (\S+)", text, re.M).group(1))
    total = float(re.search(r"^cnnmode_batch_size_sum\{[^}]*\} (\S+)", text, re.M).group(1))
    at_cap = float(re.search(r'^cnnmode_batch_size_bucket\{le="8.0",[^}]*\} (\S+)', text, re.M).group(1))
    assert total == 48  # every image once (the warm-up runs outside the batcher)
    assert total / count > 1.5 and at_cap == count  # batched, and never a batch over 8
    assert 'cnnmode_requests_total{model="default",status="200",version="1"} 48.0' in text


def _accepted(url: str) -> float:
    """Requests inside the server or already answered."""
    text = httpx.get(f"{url}/metrics").text
    inside = float(re.search(r"^cnnmode_requests_in_progress\{[^}]*\} (\S+)", text, re.M).group(1))
    done = re.search(r'^cnnmode_requests_total\{[^}]*status="200"[^}]*\} (\S+)', text, re.M)
    return inside + (float(done.group(1)) if done else 0.0)


def _big_png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), (i * 7 % 255, 100, 200)).save(buf, "PNG")  # ~0.4 s to decode
    return buf.getvalue()


def test_graceful_shutdown_answers_every_accepted_request(served_run):
    # Slow-to-decode images and one decode thread keep requests inside the server when SIGTERM arrives; it is
    # sent once all 16 are accepted (never while one still sits in the listening socket's backlog).
    proc, url = start_server(served_run, "--threads", "1")
    big = _big_png(3)
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(lambda: httpx.post(f"{url}/v1/predict", files={"files": ("big.png", big)},
                                                      timeout=60).status_code) for _ in range(16)]
            deadline = time.monotonic() + 30
            while _accepted(url) < 16 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            codes = [f.result() for f in futures]
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
        assert codes == [200] * 16, codes
        assert _refused(url)
    finally:
        if proc.poll() is None:
            proc.kill()


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.TransportError:
        return True
    return False


def test_a_model_that_cannot_be_loaded_exits_with_one_line(tmp_path):
    result = run_cli("serve", str(tmp_path / "missing.pt"), "--port", str(free_port()))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "no model at" in result.stderr
    result = run_cli("serve", str(tmp_path), "--workers", "64", "--threads", "2")
    assert result.returncode == 2 and "more than the" in result.stderr


def test_workers_die_with_their_parent(served_run):
    """#30 item 19: kill -9 of `cnnmode serve --workers 2` must not leave its workers serving on the port."""
    import psutil

    proc, url = start_server(served_run, "--workers", "2", "--threads", "1")
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    proc.kill()
    proc.wait()
    def running(p) -> bool:  # a dead worker nobody reaps (no init in a container) stays a zombie
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30
    while any(running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in workers if running(p)]
    for p in alive:
        p.kill()
    assert not alive, "workers outlived their parent"
    try:
        httpx.get(f"{url}/healthz", timeout=2)
        answered = True
    except httpx.TransportError:
        answered = False
    assert not answered


def test_slow_bodies_are_cut_off_and_do_not_pile_up(served_run):
    """#30 item 12: sockets that declare a body, send part of it and hold, are answered 408 within --timeout-s and
    closed; bodies arriving at once are capped by --max-inflight-mb (503 with Retry-After)."""
    import socket

    proc, url = start_server(served_run, "--threads", "1", "--timeout-s", "2", "--max-body-mb", "1",
                             "--max-inflight-mb", "2")
    port = int(url.rsplit(":", 1)[1])
    try:
        def stalled(send_bytes: int) -> socket.socket:
            s = socket.create_connection(("127.0.0.1", port))
            part = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                    b"Content-Type: image/png\r\n\r\n")
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 1000000\r\n\r\n" + part + b"x" * (send_bytes - len(part)))
            s.settimeout(15)
            return s
        socks = [stalled(800_000) for _ in range(3)]  # 2.4 MB in flight: the third is over the 2 MB cap
        answers = []
        for s in socks:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            answers.append(data.split(b" ", 2)[1] if data else b"closed")
            s.close()
        assert sorted(answers) == [b"408", b"408", b"503"], answers
        assert httpx.get(f"{url}/healthz").status_code == 200  # and it keeps serving
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_busy_port_is_refused_before_serving_and_threads_follow_the_affinity(served_run, monkeypatch):
    """#30 item 22: no "serving on ..." for a port something holds; the default threads follow the cores this
    process may use and OMP_NUM_THREADS."""
    import socket

    from cnnmode.serve.options import ServeOptions

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        r = run_cli("serve", str(served_run), "--port", str(held.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr and "serving" not in r.stdout
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ServeOptions(target="x").check().threads == 1
    with __import__("pytest").raises(Exception, match="more than the 1 cores"):
        ServeOptions(target="x", workers=2, threads=1).check()
