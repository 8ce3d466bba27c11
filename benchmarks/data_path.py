"""The data path: decoding and caching the CIFAR-10 JPEGs, and the loader's share of training step time.

    python benchmarks/data_path.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--recipes speed cnnmode-resnet50]
    python benchmarks/data_path.py --data ../shared/datasets/cifar10-jpeg.tar.gz --augment-only \
        --recipe cnnmode-resnet50 --size 80

1. Decodes every image of `--data` into a fresh uint8 cache in a temporary folder (what the first run of a
   recipe pays once), then loads the cache again (what every later run pays).
2. For each recipe (at 32 px, its own batch size and augmentation), times `--steps` batches of the training
   loader alone, and `--steps` full training steps that include the loader; the loader's share is their ratio.

With `--augment-only`: the recipe's per-image policies (AutoAugment, ..., the stage `aug.batched` switches: one
image at a time through torchvision's transforms, or batched over chunks of about 256 images as the loader runs
them) on `--steps` batches of its stored images, then its whole
training loader (indexing, policies, resize to `--size`, colour, flips, crops, normalisation), each both ways in
alternated rounds. Prints the median images per second and the median of the rounds' ratios:
    augment cnnmode-resnet50 80px: per-image N img/s, batched M img/s (xR)
    loader cnnmode-resnet50 80px: per-image N img/s, batched M img/s (xR)
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import FirstBatches, engine_parts, probe  # noqa: E402

from cnnmode.config import resolve_config  # noqa: E402
from cnnmode.data import augment, build_data  # noqa: E402
from cnnmode.engine.device import pick_device  # noqa: E402
from cnnmode.engine.loop import train_one_epoch  # noqa: E402


def timed_build(data: str, root: str) -> float:
    """Seconds to build the data bundle (decode or cache load, splits, normalisation statistics)."""
    cfg = resolve_config(overrides=[f"data.path={data}", f"data.root={root}"])
    start = time.perf_counter()
    build_data(cfg, pick_device("cpu"))
    return time.perf_counter() - start


def loader_share(data: str, recipe: str, steps: int, rounds: int) -> tuple[float, float, float]:
    """(median loader seconds per batch, median training seconds per step, loader share) for a recipe at 32 px."""
    model, loader, criterion, setup, _ = engine_parts(
        resolve_config(recipe, overrides=[f"data.path={data}", "data.img_size=32"]))
    loader.set_epoch(1)
    train_one_epoch(model, FirstBatches(loader, 2), criterion, setup)  # warm-up
    load_s, step_s = [], []
    for round_ in range(rounds):
        loader.set_epoch(round_ + 2)
        start = time.perf_counter()
        for _ in itertools.islice(iter(loader), steps):
            pass
        load_s.append((time.perf_counter() - start) / steps)
        step_s.append(train_one_epoch(model, FirstBatches(loader, steps), criterion, setup)["time"] / steps)
    load, step = statistics.median(load_s), statistics.median(step_s)
    return load, step, load / step


def augment_throughput(data: str, recipe: str, size: int, steps: int, rounds: int) -> dict[str, tuple]:
    """Images per second of the recipe's per-image policies (the stage `aug.batched` switches) and of its whole
    training loader at `size` px, one image at a time vs batched, in alternated rounds:
    {"augment": (per-image, batched, median ratio), "loader": (...)}."""
    loaders = {}
    for batched in (False, True):
        cfg = resolve_config(recipe, overrides=[f"data.path={data}", f"data.img_size={size}",
                                                f"aug.batched={str(batched).lower()}"])
        loaders[batched] = build_data(cfg, pick_device("cpu")).train
    gen = torch.Generator().manual_seed(0)
    size_of_batch, count = loaders[True].batch_size, len(loaders[True].images)
    batches = [torch.randint(count, (size_of_batch,), generator=gen) for _ in range(steps)]

    def policies(loader) -> float:
        """The policies as the loader runs them: batched over chunks of several batches, else image by image."""
        loader._chunk = None
        start = time.perf_counter()
        for i, idx in enumerate(batches):
            if loader.batch_policy:
                loader.policy_chunk(batches, i)
            else:
                augment.apply_per_image(loader.images[idx], loader.policy)
        return steps * size_of_batch / (time.perf_counter() - start)

    def whole(loader, epoch: int) -> float:
        loader.set_epoch(epoch)
        start = time.perf_counter()
        n = sum(len(x) for x, _ in itertools.islice(iter(loader), steps))
        return n / (time.perf_counter() - start)

    rates = {(stage, batched): [] for stage in ("augment", "loader") for batched in (False, True)}
    for round_ in range(rounds + 1):  # round 0 warms up
        for batched, loader in loaders.items():
            got = {"augment": policies(loader), "loader": whole(loader, round_ + 1)}
            for stage, rate in got.items():
                if round_:
                    rates[stage, batched].append(rate)
    out = {}
    for stage in ("augment", "loader"):
        one, many = rates[stage, False], rates[stage, True]
        out[stage] = (statistics.median(one), statistics.median(many),
                      statistics.median(b / a for a, b in zip(one, many)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipes", nargs="+", default=["speed", "cnnmode-resnet50"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--augment-only", action="store_true",
                    help="time the training loader's augmentation per-image vs batched (see above)")
    ap.add_argument("--recipe", help="with --augment-only: the recipe (default: each of --recipes)")
    ap.add_argument("--size", type=int, default=0, help="with --augment-only: image size (default: the recipe's)")
    args = ap.parse_args()
    print(f"probe before: {probe()} img/s", flush=True)
    if args.augment_only:
        for recipe in [args.recipe] if args.recipe else args.recipes:
            size = args.size or resolve_config(recipe).data.img_size or 32
            for stage, (one, many, ratio) in augment_throughput(args.data, recipe, size, args.steps,
                                                                args.rounds).items():
                print(f"{stage} {recipe} {size}px: per-image {one:.0f} img/s, batched {many:.0f} img/s "
                      f"(x{ratio:.1f})", flush=True)
        print(f"probe after: {probe()} img/s")
        return
    with tempfile.TemporaryDirectory() as root:
        first = timed_build(args.data, root)
        again = timed_build(args.data, root)
    print(f"decode + cache all images: {first:.1f} s; later runs load the cache in {again:.1f} s", flush=True)
    for recipe in args.recipes:
        load, step, share = loader_share(args.data, recipe, args.steps, args.rounds)
        print(f"{recipe}: loader {1000 * load:.1f} ms/batch, training step {1000 * step:.1f} ms "
              f"(loader included): loader share {100 * share:.1f}%", flush=True)
    print(f"probe after: {probe()} img/s")


if __name__ == "__main__":
    main()
