"""Inference throughput of the fast backends against eager fp32, measured alternately (this host is noisy).

    python benchmarks/inference_speed.py RUN_DIR --data ../shared/datasets/cifar10-jpeg.tar.gz
                                         [--backends eager int8 int8-x86] [--batch-size 64] [--rounds 5]

Builds each backend of `cnnmode bench` once (int8 ones calibrated on a validation split of the training
images), checks top-1 agreement and accuracy on a stratified 2,000-image sample of the test split, then times
the backends one after another, `--rounds` times, at one batch size. Prints every measurement, the medians and
spread, and each backend's ratio of medians to eager fp32 (the first backend), with the probe around it all.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cnnmode.artifact import load_artifact  # noqa: E402
from cnnmode.deploy.bench import measure_agreement, predicted_classes, time_batches  # noqa: E402
from cnnmode.deploy.runtime import load_runner  # noqa: E402
from cnnmode.deploy.samples import calibration_images, sample_images  # noqa: E402
from cnnmode.rundir import resolve_target  # noqa: E402
from time_to_accuracy import probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (or model.pt)")
    parser.add_argument("--data", help="dataset for agreement, accuracy and calibration (default: the run's own)")
    parser.add_argument("--backends", nargs="+", default=["eager", "int8", "int8-x86"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    print(f"probe before: {probe()} img/s")
    where = resolve_target(args.run)
    art = load_artifact(where)
    images, labels = sample_images(where, art, args.data, 2000, "test")
    calib = calibration_images(where, art, args.data, 512)
    x = images[:args.batch_size]
    runners, reference = {}, None
    with torch.no_grad():
        for name in args.backends:
            runners[name] = load_runner(art, name, "cpu", calib)
            if reference is None:  # the first backend is the one the others are compared with
                reference = predicted_classes(runners[name], images)
            check = measure_agreement(runners[name], reference, images, labels)
            print(f"{name:>12}: top-1 agreement {100 * check['top1_agreement']:.2f}%, "
                  f"accuracy {100 * check['accuracy']:.2f}% on {len(images)} test images")
        speeds: dict[str, list[float]] = {name: [] for name in args.backends}
        for r in range(args.rounds):
            for name, run in runners.items():
                speeds[name].append(time_batches(run, x, budget_s=3.0)["img_s"])
            print(f"round {r + 1}: " + ", ".join(f"{n} {s[-1]:.0f}" for n, s in speeds.items()) + " img/s")
    base = statistics.median(speeds[args.backends[0]])
    print(f"\nbatch {args.batch_size}, {args.rounds} alternating rounds (median, min-max img/s):")
    for name, values in speeds.items():
        median = statistics.median(values)
        ratios = sorted(v / b for v, b in zip(values, speeds[args.backends[0]]))
        print(f"{name:>12}: {median:7.0f} ({min(values):.0f}-{max(values):.0f})  {median / base:.2f}x eager "
              f"(per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"probe after: {probe()} img/s")


if __name__ == "__main__":
    main()
