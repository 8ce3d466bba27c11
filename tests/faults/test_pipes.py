"""A named pipe among the images (`mkfifo cat/p.jpg`) is skipped and named, never read: reading one blocks until
something writes to it, which nothing will. Every verb that takes image files goes through `load_images`."""
import os
import threading

import pytest

from tests.conftest import run_cli
from tests.faults.test_bad_values import small_run  # noqa: F401  (a shared fixture)


@pytest.fixture
def folder_with_a_pipe(tiny_tree, tmp_path):
    folder = tmp_path / "imgs" / "circle"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(next((tiny_tree / "test" / "circle").iterdir()).read_bytes())
    os.mkfifo(folder / "p.jpg")
    return folder.parent


def finishes(call, pipe, seconds: float = 60):
    """call(), failing the test (and letting the reader go) if it is still blocked after `seconds`."""
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("result", call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # an opened and closed writer ends the blocked read
        worker.join(10)
        pytest.fail(f"blocked reading the named pipe {pipe}")
    return done["result"]


@pytest.mark.parametrize("verb", ["predict", "embed", "explain", "similar"])
def test_a_named_pipe_is_skipped_and_named(verb, small_run, folder_with_a_pipe, tmp_path):  # noqa: F811
    pipe = folder_with_a_pipe / "circle" / "p.jpg"
    args = {"predict": ["predict", str(small_run), str(folder_with_a_pipe)],
            "embed": ["embed", str(small_run), str(folder_with_a_pipe), "--out", str(tmp_path / "e.npy")],
            "explain": ["explain", str(small_run), str(folder_with_a_pipe), "--out", str(tmp_path / "x")],
            "similar": ["similar", str(small_run), str(pipe), "--index", str(tmp_path / "i.npy")]}[verb]
    if verb == "similar":
        built = run_cli("embed", str(small_run), str(folder_with_a_pipe / "circle" / "good.png"), "--out",
                        str(tmp_path / "i.npy"))
        assert built.returncode == 0, built.stderr
    result = finishes(lambda: run_cli(*args), pipe)
    said = result.stdout + result.stderr
    if verb == "similar":  # the query itself is the pipe: nothing to compare, one line
        assert result.returncode == 2 and "not a regular file" in result.stderr, said
        return
    assert result.returncode == 0, said
    assert "p.jpg" in said and ("not a regular file" in said or "unreadable" in said), said
