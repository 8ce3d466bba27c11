"""CNN Mode off Linux: no POSIX-only module on any path, a run-folder lock that works on every OS, memory without
/proc, a window on Windows and macOS, and consoles that cannot print every character.

Windows and macOS are not at hand here: these tests make the POSIX-only modules unimportable (as they are on
Windows), take /proc away and pretend the platform, which covers our code's paths, not the OSes themselves
(`.github/workflows/ci.yml` runs the suite on all three where GitHub Actions is available).
"""
import ast
import os
import shutil
import subprocess
import zipfile
import sys
from pathlib import Path

import httpx
import pytest

from cnnmode.engine import device as device_mod
from cnnmode.errors import UsageError
from cnnmode.rundir import RunDir
from tests.conftest import CLASSES, fast_overrides
from tests.deploy.video.conftest import write_video
from tests.serve.conftest import png, start_server

PACKAGE = Path(__file__).resolve().parents[1] / "cnnmode"
POSIX_ONLY = {"resource", "fcntl", "termios", "tty", "pty", "pwd", "grp", "posix", "crypt", "syslog"}

# run the real CLI as Windows would import it: these modules do not exist there
WITHOUT_POSIX = ("import sys, runpy\n"
                 "sys.modules['resource'] = None\n"
                 "sys.modules['fcntl'] = None\n"
                 "sys.argv = ['cnnmode', *sys.argv[1:]]\n"
                 "runpy.run_module('cnnmode', run_name='__main__')\n")


def cli_without_posix(*args: str, encoding: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", **({"PYTHONIOENCODING": encoding} if encoding else {}))
    return subprocess.run([sys.executable, "-c", WITHOUT_POSIX, *args], capture_output=True, timeout=timeout,
                          env=env, text=True, errors="replace")


def test_no_posix_only_module_is_imported_anywhere_in_the_package():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] in POSIX_ONLY]
            if isinstance(node, ast.Attribute) and node.attr in ("sched_getaffinity", "SIGKILL") and \
                    path.name != "machine.py" and "getattr" not in ast.unparse(node):  # machine.py asks hasattr first
                found.append(f"{path.relative_to(PACKAGE)}: {ast.unparse(node)}")
    assert found == []


def test_train_eval_predict_video_and_serve_without_resource_and_fcntl(tiny_tree, tmp_path):
    trained = cli_without_posix("train", *fast_overrides(tmp_path, tiny_tree, **{"run.name": "win"}))
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "runs" / "win"
    assert (run / "model.pt").exists()

    # a console that cannot print an arrow (`eval` prints "confused: A → B") gets "?", not a crash
    evaluated = cli_without_posix("eval", str(run), encoding="ascii")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "confused:" in evaluated.stdout and " ? " in evaluated.stdout

    image = next((tiny_tree / "test").rglob("*.png"))
    predicted = cli_without_posix("predict", str(run), str(image))
    assert predicted.returncode == 0, predicted.stderr
    assert image.name in predicted.stdout

    clip = write_video(tmp_path / "clip.avi", seconds=1)
    video = cli_without_posix("video", str(run), "--source", str(clip), "--backend", "eager",
                              "--csv", str(tmp_path / "frames.csv"))
    assert video.returncode == 0, video.stderr
    assert len((tmp_path / "frames.csv").read_text().splitlines()) == 1 + 10

    server, url = start_server(run, "--backend", "eager", "--threads", "1", launch=("-c", WITHOUT_POSIX))
    try:
        answer = httpx.post(f"{url}/v1/predict", files=[("files", ("a.png", png(1)))], timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["top"][0]["class"] in CLASSES
    finally:
        server.kill()
        server.wait()


def test_the_run_folder_lock_holds_across_processes(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cnnmode.rundir import RunDir\n"
                               f"with RunDir({str(run.path)!r}).locked():\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run.in_use()
        with pytest.raises(UsageError, match="in use by another cnnmode process"):
            with run.locked():
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not run.in_use()  # the OS released it with the process
    with run.locked():
        assert run.in_use()


def test_peak_memory_without_proc(monkeypatch):
    real = Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self).startswith("/proc"):
            raise OSError("no /proc on this OS")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_proc)
    monkeypatch.setitem(sys.modules, "resource", None)
    peak = device_mod.peak_memory_mb(device_mod.torch.device("cpu"))
    assert 10 < peak < 64 * 2**10


def test_show_on_windows_needs_no_display_variable_only_an_opencv_with_a_gui(monkeypatch):
    from cnnmode.deploy.video import outputs

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert outputs.window_problem() == "no display"  # Linux without X11 or Wayland
    monkeypatch.setattr(outputs.sys, "platform", "win32")
    problem = outputs.window_problem()
    assert problem != "no display"
    if problem:  # this machine's OpenCV is the headless build: the line says how to get a window
        assert "pip install opencv-python" in problem


def test_the_github_workflow_passes_actionlint():
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if binary is None:
        pytest.skip("actionlint has no wheel for this platform (requirements.txt installs it on Linux x86-64)")
    workflow = PACKAGE.parent / ".github" / "workflows" / "ci.yml"
    checked = subprocess.run([binary, str(workflow)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert all(os_ in workflow.read_text() for os_ in ("ubuntu-latest", "windows-latest", "macos-latest"))


def test_a_zip_written_with_backslashes_reads_as_class_folders(tiny_tree, tmp_path):
    from cnnmode.data.archive import Limits
    from cnnmode.data.source_layout import find_layout, open_source, read_files

    archive = tmp_path / "from-windows.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for image in sorted(tiny_tree.rglob("*.png")):
            z.write(image, "shapes\\" + "\\".join(image.relative_to(tiny_tree).parts))  # as some Windows tools do
    limits = Limits.from_mb_gb(10, 1)
    path, files, dirs, opened = open_source(str(archive), limits)
    layout = find_layout(files, dirs, str(archive))
    assert layout.classes == list(CLASSES)
    assert len(layout.splits["train"]) == 90 and len(layout.splits["test"]) == 30
    name = layout.splits["test"][0][0]
    blobs, skipped = read_files(path, opened, [name], limits)
    assert blobs[name][:4] == b"\x89PNG" and not skipped
