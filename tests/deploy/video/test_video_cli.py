"""`cnnmode video` end to end: the annotated file, the CSV, the overlay's colours, MJPEG, Ctrl-C, bad input."""
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import httpx
import numpy as np
import pytest

from cnnmode.deploy.video import FileSource, classify_frames
from cnnmode.deploy.video.mjpeg import MjpegServer
from cnnmode.deploy.video.overlay import GREEN, YELLOW, draw
from tests.conftest import run_cli
from tests.deploy.video.conftest import write_video


def _frame_count(path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def test_annotated_video_and_csv(trained_run, video, tmp_path):
    out, table = tmp_path / "out.avi", tmp_path / "labels.csv"
    r = run_cli("video", str(trained_run), "--source", str(video), "--output", str(out), "--csv", str(table),
                "--topk", "2", "--stride", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("backend ") and "(auto" in r.stdout.splitlines()[0]  # the default, named first
    assert "30 frames read, 15 classified, 0 dropped" in r.stdout
    assert _frame_count(out) == 30 and cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == 10
    rows = table.read_text().splitlines()
    assert rows[0] == "frame,time_s,top1,prob1,top2,prob2" and len(rows) == 16
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(0, 30, 2))
    assert not list(tmp_path.glob(".*partial*"))


def test_mp4_and_max_frames(trained_run, video, tmp_path):
    r = run_cli("video", str(trained_run), "--source", str(video), "--output", str(tmp_path / "o.mp4"),
                "--max-frames", "12")
    assert r.returncode == 0, r.stderr
    assert _frame_count(tmp_path / "o.mp4") == 12


def test_overlay_colour_follows_the_threshold():
    def colours(confidence):
        image = draw(np.zeros((240, 320, 3), np.uint8), [("cat", confidence)], threshold=0.7)
        pixels = image.reshape(-1, 3)
        return (pixels == GREEN).all(1).sum(), (pixels == YELLOW).all(1).sum()

    confident, unsure = colours(0.9), colours(0.5)
    assert confident[0] > 50 and confident[1] == 0
    assert unsure[1] > 50 and unsure[0] == 0


def test_mjpeg_stream_sends_jpeg_frames():
    server, stop = MjpegServer(0), threading.Event()

    def publish():
        i = 0
        while not stop.is_set():
            server.publish(np.full((48, 64, 3), i % 256, np.uint8))
            i += 1
            time.sleep(0.02)

    threading.Thread(target=publish, daemon=True).start()
    try:
        assert "<img src='/stream'" in httpx.get(server.url).text
        data = b""
        with httpx.stream("GET", server.url + "stream", timeout=10) as r:
            assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=cnnmodeframe"
            for chunk in r.iter_bytes():
                data += chunk
                if data.count(b"Content-Type: image/jpeg") >= 3:
                    break
        assert data.startswith(b"--cnnmodeframe") and data.count(b"\xff\xd8") >= 2  # JPEG starts
        assert httpx.get(server.url + "nope").status_code == 404
    finally:
        stop.set()
        server.close()


def test_show_without_a_display_runs_headless(trained_run, video):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-m", "cnnmode", "video", str(trained_run), "--source", str(video), "--show",
                        "--max-frames", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "--show: no display; running headless" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_leaves_a_playable_file_and_a_summary(trained_run, tmp_path, sig):
    """SIGTERM is what `docker stop` and `timeout` send (#30 item 6): treated as Ctrl-C."""
    long = write_video(tmp_path / "long.avi", frames=8000, size=64)
    out = tmp_path / "out.avi"
    proc = subprocess.Popen([sys.executable, "-m", "cnnmode", "video", str(trained_run), "--source", str(long),
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell running the tests in the background ignores SIGINT, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / ".out.partial.avi"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not (partial.exists() and partial.stat().st_size > 10_000) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the video ended before Ctrl-C was sent: {proc.communicate()}"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "frames read" in stdout
    assert 0 < _frame_count(out) < 8000 and not partial.exists()


@pytest.mark.parametrize("args, code, words", [
    (["--output", "/no/such/folder/out.avi"], 2, "does not exist"),
    (["--output", "out.mkv"], 2, "unsupported extension; use one of .avi, .mp4"),
    (["--csv", "labels.txt"], 2, "use one of .csv"),
    (["--stride", "0"], 2, "--stride"),
])
def test_bad_options_are_refused_before_capture(trained_run, video, tmp_path, args, code, words):
    r = run_cli("video", str(trained_run), "--source", str(video), *args, cwd=tmp_path)
    assert r.returncode == code and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("source, code, words", [
    ("missing.avi", 2, "no such video file"),
    ("7", 1, "cannot open camera 7"),
    ("http://127.0.0.1:9/feed", 1, "cannot open http://127.0.0.1:9/feed"),
])
def test_bad_sources_exit_with_one_line(trained_run, tmp_path, source, code, words):
    r = run_cli("video", str(trained_run), "--source", source, cwd=tmp_path)
    assert r.returncode == code and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_show_under_xvfb_when_it_can(trained_run, video):
    import shutil

    gui = next((line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")), "")
    if shutil.which("xvfb-run") is None or "NONE" in gui.upper():
        pytest.skip("needs xvfb-run and an OpenCV with GUI support (the default opencv-python-headless has none)")
    r = subprocess.run(["xvfb-run", "-a", sys.executable, "-m", "cnnmode", "video", str(trained_run), "--source",
                        str(video), "--show", "--max-frames", "5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "running headless" not in r.stdout, r.stderr


def test_int8_calibrates_on_the_run_folder_or_on_calib_data(trained_run, video, tmp_path):
    table = tmp_path / "int8.csv"
    r = run_cli("video", str(trained_run), "--source", str(video), "--backend", "int8-x86", "--csv", str(table))
    assert r.returncode == 0, r.stderr
    assert "30 frames read, 30 classified" in r.stdout
    int8 = [row.split(",")[2] for row in table.read_text().splitlines()[1:]]
    eager = [res.label for res in classify_frames(FileSource(str(video)).frames(), trained_run, batch_size=8)]
    assert sum(a == b for a, b in zip(int8, eager)) >= 24  # int8 keeps (nearly) every frame's label
    r = run_cli("video", str(trained_run), "--source", str(video), "--backend", "int8-x86", "--calib-data",
                str(tmp_path / "nowhere"))  # --calib-data is what int8 reads (a missing folder: one line)
    assert r.returncode == 2 and "nowhere' does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("spelling", ["same", "dotted", "link"])
def test_an_output_that_is_the_source_is_refused_and_the_source_kept(trained_run, video, tmp_path, spelling):
    source = tmp_path / "clip.avi"
    source.write_bytes(video.read_bytes())
    out = {"same": source, "dotted": tmp_path / "sub" / ".." / "clip.avi", "link": tmp_path / "alias.avi"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "link":
        if sys.platform == "win32":
            pytest.skip("symbolic links need extra rights on Windows")
        out.symlink_to(source)
    r = run_cli("video", str(trained_run), "--source", str(source), "--output", str(out))
    assert r.returncode == 2 and "is the --source file itself" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert source.read_bytes() == video.read_bytes()


def test_undecodable_frames_are_skipped_counted_and_said(trained_run, tmp_path):
    """#30 item 7: a damaged frame in the middle, and a file cut off part-way."""
    clip = write_video(tmp_path / "v.avi", frames=60, size=64)
    data = bytearray(clip.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # each frame's JPEG
    data[starts[12]:starts[12] + 300] = bytes(300)
    damaged, cut = tmp_path / "damaged.avi", tmp_path / "cut.avi"
    damaged.write_bytes(bytes(data))
    cut.write_bytes(bytes(data[:starts[40]]))
    source = FileSource(str(damaged))
    assert [f.index for f in source.frames()] == [i for i in range(60) if i != 12] and source.bad == 1
    r = run_cli("video", str(trained_run), "--source", str(damaged), "--csv", str(tmp_path / "d.csv"))
    assert r.returncode == 0 and "59 frames read" in r.stdout
    assert "skipped 1 undecodable frame(s) of the 60 the file lists" in r.stderr
    r = run_cli("video", str(trained_run), "--source", str(cut))
    assert r.returncode == 0 and "39 frames read" in r.stdout
    assert "skipped 21 undecodable frame(s) of the 60" in r.stderr


def test_unwritable_outputs_and_odd_sources_are_named(trained_run, video, tmp_path):
    """#30 item 23: a read-only folder is not "no encoder"; a folder or a pipe as --source is not "no such file"."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        for flag, name in (("--output", "o.avi"), ("--csv", "l.csv")):
            r = run_cli("video", str(trained_run), "--source", str(video), flag, str(locked / name))
            assert r.returncode == 2 and "not writable here" in r.stderr, r.stderr
    finally:
        locked.chmod(0o700)
    r = run_cli("video", str(trained_run), "--source", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr
    pipe = tmp_path / "p.avi"
    os.mkfifo(pipe)
    r = run_cli("video", str(trained_run), "--source", str(pipe))
    assert r.returncode == 2 and "not a regular file" in r.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root to mount; skipped elsewhere)."""
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield disk
    if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_a_full_disk_fails_the_video_in_one_line_and_leaves_no_short_file_under_its_name(trained_run, tmp_path,
                                                                                        small_disk, suffix):
    clip = write_video(tmp_path / "long.avi", seconds=60, size=256)  # MBs of frames for a 256 KiB disk
    out = small_disk / f"x{suffix}"
    r = run_cli("video", str(trained_run), "--source", str(clip), "--output", str(out))
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"writing {out} failed: no space left on {small_disk}" in r.stderr and "incomplete file is kept" in r.stderr
    assert not out.exists() and (small_disk / f".x.partial{suffix}").exists()


def test_a_full_disk_under_the_csv_is_one_line_and_the_video_still_finishes(trained_run, video, tmp_path,
                                                                           small_disk):
    (small_disk / "filler").write_bytes(b"\0" * 256 * 1024)  # the disk full before the CSV starts
    out, table = tmp_path / "x.avi", small_disk / "labels.csv"
    r = run_cli("video", str(trained_run), "--source", str(video), "--output", str(out), "--csv", str(table))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and f"writing {table} failed" in r.stderr, r.stderr
    assert not table.exists() and _frame_count(out) == 30
