"""Accuracy at a fixed budget for the classic recipe: ResNet-18 with the CNN Mode recipe at 32 px for 10 epochs.

    python benchmarks/accuracy_budget.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--seeds 0] [key=value ...]

Trains the `cnnmode-resnet50` recipe with `model.name=resnet18 data.img_size=32 train.epochs=10` (plus any
extra overrides) and prints test accuracy and wall time, with the machine-speed probe before and after.
Goal: >= 90% test accuracy on the CIFAR-10 JPEG copy. About an hour on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_accuracy import run  # noqa: E402

BUDGET = ["model.name=resnet18", "data.img_size=32", "train.epochs=10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    run(args.data, "cnnmode-resnet50", args.seeds, args.out, BUDGET + args.overrides)


if __name__ == "__main__":
    main()
