"""Video speed: `cnnmode video` against a reference loop written the way the seed's ai.py is, on the same file.

    python benchmarks/video_speed.py RUN_FOLDER [RUN_FOLDER ...] [--rounds 3] [--seconds 30]

Generates a 640x480, 30 FPS video (CIFAR-10 test images, enlarged and drifting), then for each model times, end
to end (decode → classify → overlay → write an MJPG .avi), the reference loop (per frame: PIL conversion,
torchvision transforms, a batch-1 forward, putText, write) and `cnnmode video` (the run_video API) with its default
backend (`auto`, named in the output) and with --backend eager, eager-bf16, compile, int8-x86 and openvino-int8,
alternating round by round; medians are quoted.
FPS counts the frames over the time from opening the video to closing the output; start-up (loading the model,
compiling, and for int8 reading calibration images and calibrating) is timed apart and also shown folded in.
Each backend's top-1 labels are compared with eager fp32's (predict's), frame by frame. Then a live source: the
same file replayed at its real frame rate through LiveSource, where the frame-to-label lag must not grow.
Prints the probe before and after.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

from cnnmode.artifact import load_artifact  # noqa: E402
from cnnmode.deploy.runtime import auto_backend, open_runner  # noqa: E402
from cnnmode.rundir import resolve_target  # noqa: E402
from cnnmode.deploy.video import LiveSource, VideoOptions, classify_frames, run_video  # noqa: E402
from time_to_accuracy import probe  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def cifar_images(n: int = 30) -> list[np.ndarray]:
    """The first n test JPEGs of the shared CIFAR-10 copy as BGR arrays (noise if the copy is missing)."""
    out = []
    if DATASET.exists():
        with tarfile.open(DATASET) as tar:
            for member in tar:
                if "/test/" in member.name and member.isfile():
                    out.append(cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR))
                    if len(out) == n:
                        break
    return out or [np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8) for i in range(n)]


def make_video(path: Path, seconds: int, fps: int = 30, size: tuple[int, int] = (640, 480)) -> Path:
    """One CIFAR image per second, enlarged to 400x400 and drifting across a grey 640x480 frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    images = [cv2.resize(img, (400, 400), interpolation=cv2.INTER_CUBIC) for img in cifar_images(seconds)]
    for i in range(seconds * fps):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        x, y = 20 + (i * 4) % 200, 40
        frame[y:y + 400, x:x + 400] = images[(i // fps) % len(images)]
        writer.write(frame)
    writer.release()
    return path


def reference_loop(target: str, video: Path, out: Path) -> tuple[int, float, list[str]]:
    """The seed's ai.py way: PIL, torchvision transforms, batch-1 forward, putText, write.
    Returns (frames, seconds from opening the video to closing the output, labels)."""
    art = load_artifact(target)
    model, p = art.model.eval(), art.preprocess
    tf = transforms.Compose([transforms.Resize(p["img_size"]), transforms.CenterCrop(p["img_size"]),
                             transforms.ToTensor(), transforms.Normalize(p["mean"], p["std"])])
    start = time.perf_counter()
    cap = cv2.VideoCapture(str(video))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), cap.get(cv2.CAP_PROP_FPS),
                             (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))))
    labels = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        with torch.no_grad():
            probs = model(tf(image).unsqueeze(0)).softmax(1)[0]
        conf, idx = probs.max(0)
        colour = (0, 255, 0) if conf >= 0.7 else (0, 255, 255)
        labels.append(art.classes[int(idx)])
        cv2.putText(frame, f"{labels[-1]}: {100 * float(conf):.1f}%", (10, 30), cv2.FONT_HERSHEY_SIMPLEX,
                    1, colour, 2)
        writer.write(frame)
    cap.release()
    writer.release()
    return len(labels), time.perf_counter() - start, labels


def ours(target: str, video: Path, out: Path, backend: str | None) -> tuple[int, float, list[str]]:
    """`cnnmode video` through its API; (frames, seconds from opening the video to closing the output, labels)."""
    table = out.with_suffix(".csv")
    summary = run_video(target, VideoOptions(source=str(video), output=str(out), backend=backend, csv=str(table)),
                        say=lambda s: None)
    with table.open() as f:
        labels = [row["top1"] for row in csv.DictReader(f)]
    return summary["frames"], summary["seconds"], labels


class PacedFile:
    """A cv2.VideoCapture over a file that gives frames no faster than the file's frame rate: a stand-in camera."""

    def __init__(self, path: str) -> None:
        self.cap = cv2.VideoCapture(path)
        self.period, self.next = 1 / self.cap.get(cv2.CAP_PROP_FPS), time.perf_counter()

    def isOpened(self) -> bool:
        return self.cap.isOpened()

    def get(self, prop):
        return self.cap.get(prop)

    def read(self):
        self.next += self.period
        time.sleep(max(0.0, self.next - time.perf_counter()))
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


def live_lag(runner, video: Path) -> dict:
    """The file replayed at its frame rate as a live source: lag in the first and last quarter, drops."""
    source = LiveSource(str(video), opener=PacedFile, reopen=0)
    results = []
    try:
        for r in classify_frames(source.frames(), runner):
            results.append((r.frame.time_s, r.latency_ms))
    except Exception:  # the replay ends as a "stalled stream": that is the end of the measurement
        pass
    source.close()
    n = len(results)
    lags = [lag for _, lag in results]
    return {"classified": n, "read": source.read, "dropped": source.dropped,
            "lag_first_ms": statistics.median(lags[: n // 4]), "lag_last_ms": statistics.median(lags[-n // 4:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", help="run folders or model.pt files")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    print(f"probe before: {probe()} img/s")
    tmp = Path(tempfile.mkdtemp(prefix="video-speed-"))
    video = make_video(tmp / "clip.avi", args.seconds)
    print(f"video: 640x480, 30 FPS, {args.seconds} s ({args.seconds * 30} frames), MJPG")
    runs = {"reference (ai.py way)": lambda t, o: reference_loop(t, video, o),
            "cnnmode video (auto)": lambda t, o: ours(t, video, o, "auto")}
    for backend in ("eager", "eager-bf16", "compile", "int8-x86", "openvino-int8"):
        runs[f"--backend {backend}"] = lambda t, o, b=backend: ours(t, video, o, b)
    for target in args.targets:
        art = load_artifact(target)
        chosen = auto_backend("cpu", can_calibrate=True)
        print(f"\n{art.name} at {art.preprocess['img_size']} px ({target}); auto: {chosen[0]} ({chosen[1]})")
        fps: dict[str, list[float]] = {name: [] for name in runs}
        startup: dict[str, list[float]] = {name: [] for name in runs}
        labels: dict[str, list[str]] = {}
        for r in range(args.rounds):
            for name, run in runs.items():  # alternating, round by round
                start = time.perf_counter()
                frames, seconds, labels[name] = run(target, tmp / "out.avi")
                startup[name].append(time.perf_counter() - start - seconds)
                fps[name].append(frames / seconds)
                print(f"  round {r + 1} {name:<24} {fps[name][-1]:7.1f} FPS ({frames} frames, start-up "
                      f"{startup[name][-1]:.1f} s)", flush=True)
        base = statistics.median(fps["reference (ai.py way)"])
        frames = len(labels["--backend eager"])
        print(f"  {'median over ' + str(args.rounds) + ' rounds':<31} {'FPS':>7} {'ratio':>6} {'start-up':>9} "
              f"{'FPS with start-up':>18} {'ratio':>6} {'same top-1 as eager':>20}")
        base_total = frames / (frames / base + statistics.median(startup["reference (ai.py way)"]))
        for name in runs:
            f, up = statistics.median(fps[name]), statistics.median(startup[name])
            total = frames / (frames / f + up)
            same = sum(a == b for a, b in zip(labels[name], labels["--backend eager"])) / frames
            print(f"  {name:<31} {f:7.1f} {f / base:5.2f}x {up:8.1f}s {total:18.1f} {total / base_total:5.2f}x "
                  f"{100 * same:19.2f}%")
        lag = live_lag(open_runner(resolve_target(target), "auto", calib_count=128)[0], video)
        print(f"  live at 30 FPS: {lag['classified']} classified of {lag['read']} read ({lag['dropped']} dropped); "
              f"lag {lag['lag_first_ms']:.0f} ms in the first quarter, {lag['lag_last_ms']:.0f} ms in the last")
    print(f"probe after: {probe()} img/s")


if __name__ == "__main__":
    main()
