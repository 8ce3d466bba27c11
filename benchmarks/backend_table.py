"""Which backend `--backend auto` picks on this CPU kind: every backend benchmarked, gated and ranked.

    python benchmarks/backend_table.py RUN_FOLDER [--rounds 3] [--batch-sizes 1,64] [--write]

Runs `cnnmode bench` (the `bench()` API) over every backend of the runtime registry, `--rounds` times, alternating
(each round times every backend once); quotes medians of img/s per batch size, the top-1 agreement with eager fp32
on the run's test images and whether it passes the parity gate (runtime.MIN_AGREEMENT). Backends that pass are
ranked by the geometric mean of their img/s over the batch sizes. With --write, that order becomes this CPU kind's
row of cnnmode/deploy/backend_table.json, which `auto` reads. Prints the CPU, its kind and the probe before/after.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cnnmode.deploy.bench import bench  # noqa: E402
from cnnmode.deploy.runtime import AUTO_TABLE, BACKENDS, MIN_AGREEMENT  # noqa: E402
from cnnmode.engine.cpu import cpu_kind  # noqa: E402
from time_to_accuracy import probe as bf16_probe  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def probe() -> str:
    """The shared probe (bf16 training steps), where bf16 has kernels; elsewhere it would time an emulation."""
    return f"{bf16_probe()} img/s" if cpu_kind().bf16 else "n/a (bf16 is emulated on this CPU kind)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a trained run folder (its test split measures agreement)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--backends", default=",".join(BACKENDS.names()))
    ap.add_argument("--write", action="store_true", help="write this CPU kind's row of the auto table")
    args = ap.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    names = args.backends.split(",")
    kind = cpu_kind().name
    print(f"CPU: {cpu_name()} ({kind}); probe before: {probe()}", flush=True)
    speeds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in sizes} for n in names}
    agreement: dict[str, float] = {}
    for round_ in range(args.rounds):
        result = bench(args.run, sizes, names, out=str(Path(args.run) / "backend_table_bench.json"))
        for name, row in result["backends"].items():
            agreement[name] = row["top1_agreement"]
            for b in sizes:
                speeds[name][b].append(row["batches"][str(b)]["img_s"])
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {speeds[n][sizes[-1]][-1]:.0f}" for n in names), flush=True)
    print(f"probe after: {probe()}")
    median = {n: {b: statistics.median(v) for b, v in per.items()} for n, per in speeds.items()}
    score = {n: math.exp(statistics.mean(math.log(v) for v in median[n].values())) for n in names}
    passing = sorted((n for n in names if agreement[n] >= MIN_AGREEMENT), key=score.get, reverse=True)
    print(f"\n{result['model']} at {result['img_size']} px, {result['threads']} threads, {result['eval_images']} "
          f"test images; gate: top-1 agreement >= {100 * MIN_AGREEMENT:.1f}%")
    print("| backend | " + " | ".join(f"img/s at batch {b}" for b in sizes) + " | agreement | gate |")
    print("|---|" + "---|" * len(sizes) + "---|---|")
    for n in sorted(names, key=score.get, reverse=True):
        cells = " | ".join(f"{median[n][b]:.0f}" for b in sizes)
        print(f"| {n} | {cells} | {100 * agreement[n]:.2f}% | {'pass' if n in passing else 'fail'} |")
    print(f"\nauto order for {kind}: {', '.join(passing)}")
    if args.write:
        table = json.loads(AUTO_TABLE.read_text()) if AUTO_TABLE.exists() else {}
        table[kind] = {"order": passing, "cpu": cpu_name(), "date": datetime.date.today().isoformat(),
                       "model": f"{result['model']} at {result['img_size']} px", "threads": result["threads"],
                       "img_s": {n: median[n] for n in names}, "agreement": agreement}
        AUTO_TABLE.write_text(json.dumps(table, indent=2) + "\n")
        print(f"wrote the {kind} row of {AUTO_TABLE}")


if __name__ == "__main__":
    main()
