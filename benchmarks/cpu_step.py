"""A recipe's training step against a bare fp32 step of the same model and batch, on this CPU.

    python benchmarks/cpu_step.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--recipes speed speed-small generic]
                                  [--rounds 3] [--steps 6] [--variants]
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_step.py ...    # an AVX2-only CPU, on a faster one

The recipe step is what `cnnmode train --recipe NAME` runs, built by the same functions (data in memory, the loader
with the recipe's augmentation, `make_parts`: the recipe's optimizer (Muon), schedule, EMA, precision and memory
format, `train_one_epoch`), at the full image size (progressive resizing off). The bare step is the same model
freshly built, fp32, NCHW, torch.optim.SGD (momentum 0.9), cross-entropy, on one fixed batch of the same size:
no loader, no augmentation, no EMA. They alternate `--rounds` times; medians of ms per step are quoted, with the
ratio (target: at most 1.3x). `--variants` also times the recipe with Muon's Newton-Schulz in bf16 (what it did
before on every CPU), with SGD instead of Muon, without EMA, and NCHW, to show where the extra cost goes.
Prints the CPU, its kind (`cpu_kind`) and the probe before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from backend_table import cpu_name, probe  # noqa: E402
from cnnmode.config import resolve_config  # noqa: E402
from cnnmode.data import build_data  # noqa: E402
from cnnmode.engine import optim  # noqa: E402
from cnnmode.engine.cpu import cpu_kind  # noqa: E402
from cnnmode.engine.device import pick_device, pick_precision  # noqa: E402
from cnnmode.engine.loop import train_one_epoch  # noqa: E402
from cnnmode.engine.setup import build_run_model, make_parts  # noqa: E402
from train_speed import FirstBatches  # noqa: E402

# (label, overrides, whether Newton-Schulz runs in bf16 whatever the CPU)
VARIANTS = [("recipe", [], False), ("Newton-Schulz in bf16 (before)", [], True),
            ("SGD instead of Muon", ["optim.name=sgd"], False), ("no EMA", ["train.ema=0"], False),
            ("NCHW", ["train.channels_last=false"], False)]


def recipe_config(recipe: str, data: str, extra: list[str]):
    """The recipe at its full image size (progressive resizing off), on 6% of the training images."""
    return resolve_config(recipe, overrides=[f"data.path={data}", "data.subset=0.06", "train.progressive_size=0",
                                             *extra])


def recipe_ms(recipe: str, data: str, steps: int, extra: list[str], ns_bf16: bool) -> float:
    """ms per step of the recipe's own training step (loader and augmentation included) over `steps` steps,
    after two warm-up steps."""
    cfg = recipe_config(recipe, data, extra)
    device = pick_device("cpu")
    bundle = build_data(cfg, device)
    model, _ = build_run_model(cfg, bundle, info=lambda line: None)
    parts = make_parts(cfg, model, steps_per_epoch=len(bundle.train), device=device,
                       precision=pick_precision(cfg.train.amp, device))

    def run(steps: int) -> dict:  # the recipe's step: criterion, optimizer step, then schedule and EMA
        return train_one_epoch(parts.forward_model, FirstBatches(bundle.train, steps), parts.criterion, parts.step,
                               on_step=lambda *_: parts.after_step())

    patch = mock.patch.object(optim, "iteration_dtype", lambda d: torch.bfloat16) if ns_bf16 else contextlib.nullcontext()
    with patch:
        bundle.train.set_epoch(1)
        run(2)
        bundle.train.set_epoch(2)
        return 1000 * run(steps)["time"] / steps


def bare_ms(recipe: str, data: str, steps: int) -> float:
    """Median ms per step of a plain fp32 NCHW forward + backward + SGD step of the same model and batch size."""
    cfg = recipe_config(recipe, data, [])
    bundle = build_data(cfg, pick_device("cpu"))
    model, _ = build_run_model(cfg, bundle, info=lambda line: None)
    model.train()
    x = torch.randn(cfg.train.batch_size, bundle.channels, bundle.img_size, bundle.img_size)
    y = torch.randint(0, len(bundle.classes), (cfg.train.batch_size,))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    times = []
    for i in range(2 + steps):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipes", nargs="+", default=["speed", "speed-small", "generic"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    ap.add_argument("--variants", action="store_true", help="also time the recipe without each of its extras")
    args = ap.parse_args()
    kind = cpu_kind()
    print(f"CPU: {cpu_name()} ({kind.name}; amp {kind.amp_dtype}, Newton-Schulz in {kind.newton_schulz_dtype}); "
          f"{torch.get_num_threads()} threads; probe before: {probe()}", flush=True)
    variants = VARIANTS if args.variants else VARIANTS[:1]
    summary = []
    for recipe in args.recipes:
        bare, timed = [], {label: [] for label, _, _ in variants}
        for round_ in range(args.rounds):
            bare.append(bare_ms(recipe, args.data, args.steps))
            for label, extra, ns_bf16 in variants:
                timed[label].append(recipe_ms(recipe, args.data, args.steps, extra, ns_bf16))
            print(f"{recipe} round {round_ + 1}: bare {bare[-1]:.0f} ms, "
                  + ", ".join(f"{label} {v[-1]:.0f} ms" for label, v in timed.items()), flush=True)
        base = statistics.median(bare)
        for label, values in timed.items():
            summary.append((recipe, label, base, statistics.median(values)))
    print(f"probe after: {probe()}\n")
    print("| recipe | step | bare fp32 ms | recipe ms | ratio |")
    print("|---|---|---|---|---|")
    for recipe, label, base, ms in summary:
        print(f"| {recipe} | {label} | {base:.0f} | {ms:.0f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
