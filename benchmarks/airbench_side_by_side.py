"""The `speed` recipe and the public airbench94_muon side by side on this CPU, both in fp32, or on a CUDA GPU.

    python benchmarks/airbench_side_by_side.py --airbench PATH/airbench94_muon.py \
        --data ../shared/datasets/cifar10-jpeg.tar.gz [--subset 1.0] [--only speed|airbench] [--gpu --runs 3]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/airbench_side_by_side.py ...   # an AVX2 CPU

airbench94_muon.py (github.com/KellerJordan/cifar10-airbench: fetch it yourself, never commit it) is written for
one CUDA GPU. Its own file runs here with the least change that lets it run on a CPU in fp32, each change checked
to apply: tensors on the CPU, fp16 weights and images in fp32, its Newton-Schulz in fp32 (not bf16, which an
AVX2 CPU can only emulate), no torch.compile, and CUDA events replaced by the wall clock. Its data is the same
JPEG copy of CIFAR-10 that `cnnmode` reads, decoded into the train.pt/test.pt files it expects (with --subset,
the first fraction of each class's training images; the test set stays whole). Then `cnnmode train --recipe
speed` runs on the same fraction (`data.subset`). Prints, for each: test accuracy (airbench's with its own TTA,
ours with the recipe's), training time as each reports it, and wall time; and the CPU, its kind and the probe.

With --gpu both run on the CUDA GPU, airbench's file unmodified: a driver does what its `__main__` does (the model
compiled with mode="max-autotune", one warm-up run on random labels that the timing leaves out), but --runs times
instead of 200; our recipe runs --runs seeds as it is (`train.device=auto` picks the GPU, no torch.compile).
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# (what airbench94_muon.py says, what it says here); every one must be found, so a changed upstream file fails loudly
PATCHES = [("@torch.compile\ndef zeropower_via_newtonschulz5", "def zeropower_via_newtonschulz5"),
           ("X = G.bfloat16()", "X = G.float()"),
           ('map_location=torch.device("cuda")', 'map_location=torch.device("cpu")'),
           ("self.images.half()", "self.images.float()"),
           ("mod.half()", "mod.float()")]

DRIVER = """
import json, sys, time, torch
class WallClockEvent:
    def __init__(self, enable_timing=True): self.t = None
    def record(self): self.t = time.perf_counter()
    def elapsed_time(self, end): return 1000 * (end.t - self.t)
torch.cuda.Event = WallClockEvent
torch.cuda.synchronize = lambda *a, **k: None
sys.path.insert(0, sys.argv[1])
import airbench_cpu as ab
model = ab.CifarNet().to(memory_format=torch.channels_last)
start = time.perf_counter()
acc = ab.main(0, model)
print(json.dumps({"accuracy": acc, "wall_s": time.perf_counter() - start}))
"""

GPU_DRIVER = """
import json, sys, time, torch
import airbench94_muon as ab
model = ab.CifarNet().cuda().to(memory_format=torch.channels_last)
model.compile(mode="max-autotune")
ab.print_columns(ab.logging_columns_list, is_head=True)
start = time.perf_counter()
ab.main("warmup", model)
warmup = time.perf_counter() - start
accs, walls = [], []
for run in range(int(sys.argv[1])):
    start = time.perf_counter()
    accs.append(ab.main(run, model))
    walls.append(time.perf_counter() - start)
print(json.dumps({"accuracies": accs, "walls": walls, "warmup_s": warmup}))
"""


def decode_split(archive: str, split: str, subset: float) -> dict:
    """One split of the JPEG copy as airbench stores CIFAR-10: uint8 NHWC images, int64 labels, class names
    (the archive read once, in its own order)."""
    import torch

    blobs: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and member.name.endswith(".jpg") and len(parts) >= 3 and parts[-3] == split:
                blobs[member.name] = tar.extractfile(member).read()
    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        names = sorted(n for n in blobs if n.split("/")[-2] == cls)
        for name in names if subset >= 1 else names[:max(1, round(subset * len(names)))]:
            images.append(np.asarray(Image.open(io.BytesIO(blobs[name])).convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return {"images": torch.from_numpy(np.stack(images)), "labels": torch.tensor(labels), "classes": CLASSES}


def write_airbench_data(archive: str, subset: float, work: Path) -> None:
    """`work/cifar10/train.pt` and `test.pt`, as airbench loads them (the test set always whole)."""
    import torch

    data = work / "cifar10"
    data.mkdir(parents=True, exist_ok=True)
    torch.save(decode_split(archive, "train", subset), data / "train.pt")
    torch.save(decode_split(archive, "test", 1.0), data / "test.pt")


def patched_source(path: Path) -> str:
    """airbench94_muon.py with PATCHES applied; a patch that no longer applies stops the benchmark."""
    text = path.read_text()
    for old, new in PATCHES:
        if old not in text:
            raise SystemExit(f"{path}: cannot find {old!r}; this benchmark patches the upstream file as of 2024-2025")
        text = text.replace(old, new)
    return text


def run_airbench(path: Path, archive: str, subset: float, work: Path) -> dict:
    """Train airbench94_muon once on this CPU in fp32 (its own schedule: 8 epochs, batch 2000, TTA)."""
    write_airbench_data(archive, subset, work)
    (work / "airbench_cpu.py").write_text(patched_source(path))
    (work / "driver.py").write_text(DRIVER)  # airbench reads its own argv[0], so it must be a file
    done = subprocess.run([sys.executable, "driver.py", str(work)], cwd=work, capture_output=True, text=True)
    print(done.stdout, end="")
    if done.returncode:
        raise SystemExit(f"airbench failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    last_row = [line for line in done.stdout.splitlines() if "eval" in line]
    result["train_s"] = float(last_row[-1].split("|")[-2]) if last_row else None
    return result


def run_airbench_gpu(path: Path, archive: str, subset: float, work: Path, runs: int,
                     timeout: float) -> list[dict]:
    """Train the unmodified airbench94_muon `runs` times on the CUDA GPU after its own compiled warm-up run (its
    max-autotune compile included); past `timeout` seconds it is stopped and reported as not measured."""
    write_airbench_data(archive, subset, work)
    (work / "airbench94_muon.py").write_text(path.read_text())
    (work / "driver.py").write_text(GPU_DRIVER)
    try:
        done = subprocess.run([sys.executable, "driver.py", str(runs)], cwd=work, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        print((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""))
        print(f"airbench: not finished within {timeout:.0f} s (its compile and runs); not measured", flush=True)
        return []
    print(done.stdout, end="")
    if done.returncode:
        raise SystemExit(f"airbench failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    train_s = [float(line.split("|")[-2]) for line in done.stdout.splitlines() if "eval" in line]
    print(f"airbench warm-up (compile included): {result['warmup_s']:.1f} s", flush=True)
    return [{"accuracy": a, "wall_s": w, "train_s": t}
            for a, w, t in zip(result["accuracies"], result["walls"], train_s[-runs:])]


def run_speed(archive: str, subset: float, work: Path, seed: int = 0) -> dict:
    """Train `cnnmode train --recipe speed` once on the same fraction of the data."""
    name = f"speed-{seed}"
    overrides = [f"data.path={archive}", f"run.dir={work}", f"run.name={name}", f"train.seed={seed}"]
    if subset < 1:
        overrides.append(f"data.subset={subset}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnmode", "train", "--recipe", "speed", "--quiet", *overrides],
                   check=True, cwd=ROOT)
    m = json.loads((work / name / "metrics.json").read_text())
    return {"accuracy": m["test"]["accuracy"], "train_s": m["train_time_s"], "wall_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--airbench", required=True, type=Path, help="path to airbench94_muon.py")
    ap.add_argument("--data", required=True, help="the CIFAR-10 JPEG archive")
    ap.add_argument("--subset", type=float, default=1.0, help="fraction of each class's training images")
    ap.add_argument("--only", choices=["speed", "airbench"], help="run one side only")
    ap.add_argument("--gpu", action="store_true", help="both on the CUDA GPU (airbench unmodified)")
    ap.add_argument("--runs", type=int, default=3, help="with --gpu: runs of each (seeds 0.. for ours)")
    ap.add_argument("--airbench-timeout", type=float, default=240, help="with --gpu: seconds airbench may take")
    args = ap.parse_args()
    if args.gpu:
        return main_gpu(args)
    from backend_table import cpu_name, probe
    from cnnmode.engine.cpu import cpu_kind

    print(f"CPU: {cpu_name()} ({cpu_kind().name}); probe before: {probe()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="airbench-") as tmp:
        if args.only != "airbench":
            results["cnnmode speed recipe"] = run_speed(args.data, args.subset, Path(tmp) / "runs")
        if args.only != "speed":
            results["airbench94_muon (fp32, CPU)"] = run_airbench(args.airbench, args.data, args.subset, Path(tmp))
    print(f"probe after: {probe()}\n")
    print(f"| training ({args.subset:.0%} of the training images) | test accuracy | training time s | wall s |")
    print("|---|---|---|---|")
    for name, r in results.items():
        train = f"{r['train_s']:.0f}" if r.get("train_s") is not None else "n/a"
        print(f"| {name} | {100 * r['accuracy']:.2f}% | {train} | {r['wall_s']:.0f} |")


def main_gpu(args: argparse.Namespace) -> None:
    """Both sides on the CUDA GPU, `args.runs` runs each, then one table row per run and the medians."""
    import statistics

    import torch

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="airbench-") as tmp:  # airbench first: its compile time is the unknown
        if args.only != "speed":
            rows["airbench94_muon (unmodified)"] = run_airbench_gpu(args.airbench, args.data, args.subset,
                                                                    Path(tmp), args.runs, args.airbench_timeout)
        if args.only != "airbench":
            rows["cnnmode speed recipe"] = [run_speed(args.data, args.subset, Path(tmp) / "runs", seed)
                                            for seed in range(args.runs)]
    print(f"| on {torch.cuda.get_device_name(0)} | run | test accuracy | training time s | wall s |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        for i, r in enumerate(runs):
            print(f"| {name} | {i} | {100 * r['accuracy']:.2f}% | {r['train_s']:.2f} | {r['wall_s']:.1f} |")
    for name, runs in ((n, r) for n, r in rows.items() if r):
        print(f"MEDIAN {name}: {100 * statistics.median(r['accuracy'] for r in runs):.2f}%, "
              f"{statistics.median(r['train_s'] for r in runs):.2f} s training, "
              f"{statistics.median(r['wall_s'] for r in runs):.1f} s wall", flush=True)


if __name__ == "__main__":
    main()
