"""Data-parallel scaling: training img/s of one process against `torchrun` ranks, and the share of a step that
is communication.

    python benchmarks/ddp_scaling.py [--data CIFAR.tar.gz] [--subset 4000] [--rounds 3]

On a CPU machine it compares, for ResNet-18 at 32 px (bf16 where the CPU has it), round by round (medians):
  one process with all cores as threads | one process with one thread | torchrun with one rank per core
  (one thread each; gloo all-reduce).
On a CUDA machine it runs one process on one GPU against torchrun over 1..N GPUs (NCCL).
Each run is a real `cnnmode train` of one epoch on a stratified subset; img/s is the training loop's own figure
(metrics.json `images_per_s`). Then it profiles 6 training steps inside a torchrun job (this script's
`--profile-worker` mode) and prints the all-reduce time as a share of the step. The probe (bf16 ResNet-18
steps) runs before and after, to read the figures against this host's load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def train_img_s(data: str, subset: int, out: Path, name: str, threads: int, ranks: int) -> float:
    """One epoch of `cnnmode train` (under torchrun when ranks > 0); the training loop's img/s."""
    keys = [f"data.path={data}", f"data.root={out / 'data'}", f"run.dir={out / 'runs'}", f"run.name={name}",
            "model.name=resnet18", "data.img_size=32", f"data.subset={subset}", "train.epochs=1",
            "train.batch_size=128", "optim.name=sgd", "optim.lr=0.1", "sched.name=constant", "train.ema=0",
            "aug.autoaugment=false", "data.val_split=0.05"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] \
        if ranks else [sys.executable]
    cmd = [*launcher, "-m", "cnnmode", "train", *keys] + ([] if ranks else [f"run.threads={threads}"])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "runs" / name / "metrics.json").read_text())["images_per_s"]


def profile_worker(steps: int = 6) -> None:
    """Inside torchrun: profile DDP training steps of ResNet-18 at 32 px, print the all-reduce share (rank 0)."""
    import torch

    from cnnmode.config import Config
    from cnnmode.engine import distributed
    from cnnmode.engine.device import pick_precision
    from cnnmode.engine.loop import train_one_epoch
    from cnnmode.engine.setup import make_parts
    from cnnmode.models import build_model

    w = distributed.start()
    device = distributed.rank_device(w, "auto")
    cfg = Config()
    cfg.train.batch_size = 128
    model = build_model("resnet18", num_classes=10, in_channels=3, stem="cifar", width=0, img_size=32)
    parts = make_parts(cfg, model, steps_per_epoch=steps, device=device, precision=pick_precision("auto", device),
                       world=w)
    per_rank = cfg.train.batch_size // w.size
    batches = [(torch.randn(per_rank, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (per_rank,), device=device)) for _ in range(steps + 2)]
    train_one_epoch(parts.forward_model, batches[:2], parts.criterion, parts.step)  # warm-up
    with torch.profiler.profile() as prof:
        start = time.perf_counter()
        train_one_epoch(parts.forward_model, batches[2:], parts.criterion, parts.step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    comm = sum(e.cpu_time_total for e in prof.key_averages() if "all_reduce" in e.key or "allreduce" in e.key.lower())
    if w.is_main:
        print(f"PROFILE {w.size} ranks: {1000 * wall / steps:.0f} ms a step, all-reduce {comm / 1e3 / steps:.0f} ms "
              f"a step ({100 * comm / 1e6 / wall:.0f}% of the step; gloo/NCCL work overlaps backward, so this is "
              "the time the all-reduce calls span, not all of it lost)")
    distributed.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--subset", type=int, default=4000, help="training images per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile_worker:
        return profile_worker()

    import torch

    from time_to_accuracy import probe

    gpus = torch.cuda.device_count()
    cores = len(os.sched_getaffinity(0))
    if gpus:
        setups = {"1 process, 1 GPU": (1, 0), **{f"torchrun {n} GPU(s)": (1, n) for n in range(1, gpus + 1)}}
    else:
        setups = {f"1 process, {cores} threads": (cores, 0), "1 process, 1 thread": (1, 0),
                  f"torchrun {cores} ranks x 1 thread": (1, cores)}
    print(f"probe before: {probe()}")
    figures: dict[str, list[float]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, (name, (threads, ranks)) in enumerate(setups.items()):
                figures[name].append(train_img_s(args.data, args.subset, Path(tmp), f"r{r}-{i}", threads, ranks))
                print(f"round {r + 1}: {name}: {figures[name][-1]:.1f} img/s", flush=True)
    print(f"probe after: {probe()}")
    base = statistics.median(next(iter(figures.values())))
    print("\n| setup | img/s (median) | vs the first |\n|---|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / base:.2f}x |")
    ranks = gpus or cores
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                           __file__, "--profile-worker"], capture_output=True, text=True, env=env, cwd=ROOT)
    print(next((line for line in done.stdout.splitlines() if line.startswith("PROFILE")), done.stderr[-2000:]))


if __name__ == "__main__":
    main()
