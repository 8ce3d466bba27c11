"""Time and accuracy of the `default` recipe (what `make train` runs), with the machine-speed probe around it.

    python benchmarks/default_recipe.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--seeds 0 1 2] [key=value ...]

Prints, per seed: test accuracy, training time, wall time of the whole command; then mean and spread.
Read times against ../shared/bench/probe.py (144 img/s on a quiet host), printed before and after.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROBE = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "probe.py"


def probe() -> str:
    """Machine speed in img/s from the shared probe, or 'n/a' when it is not beside the project."""
    if not PROBE.exists():
        return "n/a"
    return subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bench-default")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    print(f"probe before: {probe()} img/s", flush=True)
    results = []
    for seed in args.seeds:
        name = f"{args.recipe}-seed{seed}-{int(time.time())}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnmode", "train", "--recipe", args.recipe, "--quiet",
                        f"data.path={args.data}", f"train.seed={seed}", f"run.dir={args.out}", f"run.name={name}",
                        *args.overrides], check=True)
        wall = time.perf_counter() - start
        m = json.loads((Path(args.out) / name / "metrics.json").read_text())
        results.append((m["test"]["accuracy"], m["train_time_s"], wall, m.get("time_to_target_s")))
        print(f"seed {seed}: test {100 * m['test']['accuracy']:.2f}%  train {m['train_time_s']:.0f} s  "
              f"wall {wall:.0f} s  time_to_target {m.get('time_to_target_s')}", flush=True)
    print(f"probe after: {probe()} img/s")
    accs = [100 * r[0] for r in results]
    spread = f" (min {min(accs):.2f}, max {max(accs):.2f})" if len(accs) > 1 else ""
    print(f"{args.recipe}: mean test accuracy {statistics.mean(accs):.2f}%{spread}; median train time "
          f"{statistics.median(r[1] for r in results):.0f} s; median wall {statistics.median(r[2] for r in results):.0f} s")


if __name__ == "__main__":
    main()
