"""Time to accuracy of a recipe (default: `speed`, what `make train` runs on a CPU), with the machine-speed probe.

    python benchmarks/time_to_accuracy.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--recipe speed]
                                          [--seeds 0 1 2] [key=value ...]

Runs `cnnmode train` once per seed (the data cache is built first, outside the timings) and prints, per seed:
test accuracy, training time (the training loop, not the per-epoch validation), time to
`train.target_accuracy` on the validation split, and wall time of the whole command; then mean, spread and
medians. Read times against ../shared/bench/probe.py (144 img/s on a quiet host), printed before and after.
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
    ap.add_argument("--recipe", default="speed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    run(args.data, args.recipe, args.seeds, args.out, args.overrides)


def warm_cache(data: str) -> None:
    """Decode the images into the cache once, so no seed's timing includes it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cnnmode.config import resolve_config
    from cnnmode.data import build_data
    from cnnmode.engine.device import pick_device

    build_data(resolve_config(overrides=[f"data.path={data}"]), pick_device("cpu"))


def run(data: str, recipe: str, seeds: list[int], out: str, overrides: list[str]) -> None:
    """Train `recipe` once per seed and print accuracy and times with the probe around them."""
    warm_cache(data)
    print(f"probe before: {probe()} img/s", flush=True)
    results = []
    for seed in seeds:
        name = f"{recipe}-seed{seed}-{int(time.time())}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnmode", "train", "--recipe", recipe, "--quiet",
                        f"data.path={data}", f"train.seed={seed}", f"run.dir={out}", f"run.name={name}",
                        *overrides], check=True)
        wall = time.perf_counter() - start
        m = json.loads((Path(out) / name / "metrics.json").read_text())
        results.append((m["test"]["accuracy"], m["train_time_s"], wall, m.get("time_to_target_s")))
        print(f"seed {seed}: test {100 * m['test']['accuracy']:.2f}%  train {m['train_time_s']:.0f} s  "
              f"wall {wall:.0f} s  time_to_target {m.get('time_to_target_s')}", flush=True)
    print(f"probe after: {probe()} img/s")
    accs = [100 * r[0] for r in results]
    spread = f" (min {min(accs):.2f}, max {max(accs):.2f})" if len(accs) > 1 else ""
    print(f"{recipe} {' '.join(overrides)}: mean test accuracy {statistics.mean(accs):.2f}%{spread}; median train time "
          f"{statistics.median(r[1] for r in results):.0f} s; median wall {statistics.median(r[2] for r in results):.0f} s")


if __name__ == "__main__":
    main()
