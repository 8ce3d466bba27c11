"""Class imbalance: balanced accuracy on a long-tailed CIFAR-10 for each remedy, side by side.

    python benchmarks/imbalance.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--ratio 100] [--seeds 0]
                                   [--recipe speed] [key=value ...]

Builds CIFAR-10-LT from the archive: class i keeps 5000 * ratio^(-i/9) training images (exponential profile, as in
Cui et al. 2019; 5000 airplanes down to 50 trucks at 100:1); the test split is untouched (1000 per class). Then
trains the same recipe once per remedy and seed: none, train.class_weights=auto, train.class_weights=effective,
data.sampler=balanced, train.loss=focal, focal with effective weights, and the weights deferred to the last quarter
of the epochs (train.reweight_from=0.75, deferred re-weighting as in LDAM-DRW). Prints test balanced accuracy (equal to
accuracy here, as the test split is balanced), macro F1, and the mean accuracy of the three rarest classes.
Read times against ../shared/bench/probe.py, printed before and after.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PROBE = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "probe.py"
REMEDIES = {
    "none": [],
    "class_weights=auto": ["train.class_weights=auto"],
    "class_weights=effective": ["train.class_weights=effective"],
    "sampler=balanced": ["data.sampler=balanced"],
    "loss=focal": ["train.loss=focal"],
    "focal + effective": ["train.loss=focal", "train.class_weights=effective"],
    "class_weights=auto, deferred (DRW)": ["train.class_weights=auto", "train.reweight_from=0.75"],
    "class_weights=effective, deferred": ["train.class_weights=effective", "train.reweight_from=0.75"],
}


def probe() -> str:
    if not PROBE.exists():
        return "n/a"
    return subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True).stdout.strip()


def make_long_tailed(archive: Path, out: Path, ratio: float) -> list[int]:
    """Write out/{train,test}/CLASS/*.jpg: train cut to the long-tailed profile, test whole; the train counts."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
    classes = sorted({m.name.split("/")[-2] for m in members})
    keep = {c: round(5000 * ratio ** (-i / (len(classes) - 1))) for i, c in enumerate(classes)}
    train = sorted(m.name for m in members if m.name.split("/")[-3] == "train")
    kept = set()
    for c in classes:  # the first files of each class by name
        kept |= set([n for n in train if n.split("/")[-2] == c][:keep[c]])
    with tarfile.open(archive) as tar:  # one pass in archive order (a .tar.gz cannot seek back cheaply)
        for m in tar:
            if not (m.isfile() and m.name.endswith(".jpg")):
                continue
            split, cls, name = m.name.split("/")[-3:]
            if split == "train" and m.name not in kept:
                continue
            target = out / split / cls / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(m).read())
    return [keep[c] for c in classes]


def train(data: Path, work: Path, recipe: str, seed: int, extra: list[str]) -> tuple[dict, dict, float]:
    cmd = [sys.executable, "-m", "cnnmode", "train", "--recipe", recipe, "--quiet", f"data.path={data}",
           f"data.root={work / 'data'}", f"run.dir={work / 'runs'}", f"train.seed={seed}", *extra]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    run = Path(out.stdout.strip().splitlines()[-1].split("run: ", 1)[1])
    return (json.loads((run / "metrics.json").read_text()), json.loads((run / "eval" / "metrics.json").read_text()),
            time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--ratio", type=float, default=100.0)
    ap.add_argument("--recipe", default="speed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="+", choices=list(REMEDIES), help="run these remedies only")
    ap.add_argument("overrides", nargs="*", help="key=value for every run")
    args = ap.parse_args()
    print(f"probe before: {probe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        counts = make_long_tailed(args.data, work / "cifar10-lt", args.ratio)
        print(f"CIFAR-10-LT {args.ratio:g}:1, train per class {counts} ({sum(counts)} images), test 1000 per class",
              flush=True)
        rows = []
        for name in args.only or REMEDIES:
            results = []
            for seed in args.seeds:
                m, ev, wall = train(work / "cifar10-lt", work, args.recipe, seed, REMEDIES[name] + args.overrides)
                tail = statistics.mean(v["accuracy"] for v in list(ev["per_class"].values())[-3:])  # the rarest
                results.append((ev["balanced_accuracy"], ev["f1_macro"], tail, wall))
                print(f"  {name:<24} seed {seed}: balanced acc {100 * ev['balanced_accuracy']:.2f}%  F1 macro "
                      f"{100 * ev['f1_macro']:.2f}%  rarest-3 acc {100 * tail:.2f}%  ({wall:.0f} s)", flush=True)
            rows.append((name, *[statistics.median(r[k] for r in results) for k in range(4)]))
    print(f"\n| remedy | balanced accuracy | macro F1 | rarest 3 classes | wall |\n|---|---|---|---|---|")
    for name, bal, f1, tail, wall in rows:
        print(f"| {name} | {100 * bal:.2f}% | {100 * f1:.2f}% | {100 * tail:.2f}% | {wall:.0f} s |")
    print(f"probe after: {probe()}")


if __name__ == "__main__":
    main()
