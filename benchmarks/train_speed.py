"""Training throughput of the CNN Mode engine against the reference loop ../shared/bench/naive_loop.py.

    python benchmarks/train_speed.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--models resnet18 resnet50]
                                     [--rounds 3] [--steps 20]

For each model (torchvision ResNet, CIFAR stem, 32 px, batch 128, same augmentation as the reference: flip and
4-pixel crop) it alternates, `--rounds` times, the reference loop (run as it is, in its own process: fp32, NCHW,
ImageFolder + PIL transforms, DataLoader with 2 workers) and the engine (the in-memory uint8 TensorLoader and
`train_one_epoch` with the library defaults: bf16 autocast where the CPU has it, channels-last), each over
`--steps` timed steps after warm-up. It prints every measurement, the medians and spread, the ratio of medians,
and the model FLOP utilisation (MFU) of the engine against the CPU's bf16 peak: the nominal peak from the ISA
(cores x clock x FLOP/cycle) and the rate a large bf16 matrix multiply reaches on this machine.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "bench"
sys.path.insert(0, str(ROOT))

from cnnmode.config import resolve_config  # noqa: E402
from cnnmode.data import build_data  # noqa: E402
from cnnmode.engine.device import pick_device, pick_precision  # noqa: E402
from cnnmode.engine.loop import train_one_epoch  # noqa: E402
from cnnmode.engine.optim import build_optimizer  # noqa: E402
from cnnmode.evaluation.complexity import summarize  # noqa: E402
from cnnmode.engine.losses import Criterion  # noqa: E402
from cnnmode.engine.setup import build_run_model, make_step_setup  # noqa: E402
from time_to_accuracy import probe  # noqa: E402


class FirstBatches:
    """The first `n` batches of a loader, as a loader (so `train_one_epoch` times exactly those steps)."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def naive_img_s(data: str, model: str, steps: int, batch_size: int) -> float:
    """Images/second of the reference loop, run in its own process exactly as shipped."""
    out = subprocess.run([sys.executable, str(SHARED / "naive_loop.py"), "--data", data, "--model", model,
                          "--steps", str(steps), "--batch-size", str(batch_size)],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"([\d.]+) img/s", out).group(1))


def engine_parts(cfg):
    """(model, training loader, criterion, step setup, train FLOPs per image) built the way `cnnmode train` builds
    them."""
    device = pick_device(cfg.run.device)
    precision = pick_precision(cfg.train.amp, device)
    bundle = build_data(cfg, device)
    model, _ = build_run_model(cfg, bundle, info=lambda message: None)
    flops = summarize(model, bundle.img_size, bundle.channels)["train_flops_per_image"]
    model = model.to(device, memory_format=torch.channels_last)
    setup = make_step_setup(cfg, build_optimizer(cfg, model), device=device, precision=precision)
    return model, bundle.train, Criterion.from_config(cfg), setup, flops


def engine_setup(data: str, model_name: str, batch_size: int):
    """Engine parts for a CIFAR-stem model with the reference loop's batch size and augmentation."""
    return engine_parts(resolve_config(overrides=[
        f"data.path={data}", f"model.name={model_name}", "model.stem=cifar", f"train.batch_size={batch_size}",
        "aug.flip=true", "aug.crop_padding=4", "optim.lr=0.05", "data.val_split=0.1"]))


def engine_img_s(parts, steps: int, warmup: int = 3) -> float:
    """Images/second of the engine over `steps` timed steps (loader included) after `warmup` steps."""
    model, loader, criterion, setup, _ = parts
    loader.set_epoch(1)
    train_one_epoch(model, FirstBatches(loader, warmup), criterion, setup)
    loader.set_epoch(2)
    return train_one_epoch(model, FirstBatches(loader, steps), criterion, setup)["img_s"]


def nominal_bf16_peak() -> tuple[float, str]:
    """(FLOP/s, how it was worked out): cores x clock x bf16 FLOP per cycle per core for the widest bf16 unit."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(m.group(1).split()) if (m := re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)) else set()
    mhz = float(m.group(1)) if (m := re.search(r"cpu MHz\s*:\s*([\d.]+)", text)) else 2000.0
    cores = torch.get_num_threads()
    if "amx_bf16" in flags:
        per_cycle, unit = 1024, "AMX tiles"  # one 16x32x16 bf16 tile product per 16 cycles
    elif "avx512_bf16" in flags:
        per_cycle, unit = 128, "AVX-512 BF16 dot products, 2 per cycle"
    elif "avx512f" in flags:
        per_cycle, unit = 64, "AVX-512 fp32 FMA, 2 per cycle"
    else:
        per_cycle, unit = 32, "AVX2 fp32 FMA, 2 per cycle"
    peak = cores * mhz * 1e6 * per_cycle
    return peak, f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({unit})"


def matmul_bf16_rate(n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` n x n bf16 matrix multiplies (what the hardware delivers in practice)."""
    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the CIFAR-10 JPEG copy (.tar.gz or folder)")
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--rounds", type=int, default=3, help="alternations of reference and engine per model")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    peak, how = nominal_bf16_peak()
    measured = matmul_bf16_rate()
    print(f"probe before: {probe()} img/s")
    print(f"bf16 peak: nominal {peak / 1e9:.0f} GFLOP/s ({how}); 4096^3 bf16 matmul reaches {measured / 1e9:.0f} GFLOP/s")
    summary = []
    for name in args.models:
        parts = engine_setup(args.data, name, args.batch_size)
        naive, engine = [], []
        for round_ in range(args.rounds):
            naive.append(naive_img_s(args.data, name, args.steps, args.batch_size))
            engine.append(engine_img_s(parts, args.steps))
            print(f"{name} round {round_ + 1}: reference {naive[-1]:.1f} img/s, engine {engine[-1]:.1f} img/s",
                  flush=True)
        ratio = statistics.median(engine) / statistics.median(naive)
        achieved = statistics.median(engine) * parts[3]
        print(f"{name}: reference {spread(naive)}; engine {spread(engine)}; ratio {ratio:.2f}x; "
              f"{parts[3] / 1e9:.2f} GFLOP per training image; MFU {100 * achieved / peak:.1f}% of nominal bf16 peak, "
              f"{100 * achieved / measured:.1f}% of measured bf16 matmul rate", flush=True)
        summary.append((name, statistics.median(naive), statistics.median(engine), ratio,
                        100 * achieved / peak, 100 * achieved / measured))
    print(f"probe after: {probe()} img/s")
    print("\n| model | reference img/s | engine img/s | ratio | MFU (nominal peak) | MFU (matmul rate) |")
    print("|---|---|---|---|---|---|")
    for name, n, e, r, m1, m2 in summary:
        print(f"| {name} | {n:.1f} | {e:.1f} | {r:.2f}x | {m1:.1f}% | {m2:.1f}% |")


if __name__ == "__main__":
    main()
