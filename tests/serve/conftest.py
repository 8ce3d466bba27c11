import io
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from cnnmode import train
from cnnmode.config import resolve_config
from tests.conftest import fast_overrides


@pytest.fixture(scope="package")
def served_run(tiny_tree, tmp_path_factory):
    """A small trained run (SimpleCNN, 3 classes, 32 px) for the server tests."""
    tmp = tmp_path_factory.mktemp("serve")
    return train(resolve_config(overrides=fast_overrides(tmp, tiny_tree, **{"train.epochs": 2, "run.name": "s"})),
                 quiet=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (i * 7 % 255, 100, 200)).save(buf, "PNG")
    return buf.getvalue()


def start_server(target, *flags: str, launch: tuple[str, ...] = ("-m", "cnnmode")) -> tuple[subprocess.Popen, str]:
    """`cnnmode serve TARGET` (or several: a list) on a free loopback port, returned once /readyz answers 200 (`launch`: the
    interpreter's arguments that start the CLI)."""
    port = free_port()
    targets = [str(t) for t in target] if isinstance(target, (list, tuple)) else [str(target)]
    proc = subprocess.Popen([sys.executable, *launch, "serve", *targets, "--port", str(port), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server never became ready")


@pytest.fixture
def server(served_run):
    proc, url = start_server(served_run, "--threads", "1", "--max-batch-size", "8", "--max-wait-ms", "30")
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait()
