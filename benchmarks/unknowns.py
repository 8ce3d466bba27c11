"""Unknown images (#32): train on 6 CIFAR-10 classes, show the model the other 4, and measure how well each score
tells them apart, what rejecting costs, and how big the index gets.

    python benchmarks/unknowns.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--seed 0] [--recipe speed]
                                  [key=value ...]

The 6 known classes are drawn at random (seeded, as in the open-set protocol of Neal et al. 2018); their train and
test images form the data, the test images of the other 4 are the unknowns. Prints the test accuracy, the AUROC of
each score (msp, knn, combined; the stored one is marked), the share of unknowns rejected and of known images kept
at --reject auto (95% coverage on held-out known images), the size of the k-NN index and the time to fit it
(`cnnmode calibrate`), and predict's per-image latency with --reject auto vs off (alternated rounds, medians).
Read times against ../shared/bench/probe.py, printed before and after.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from time_to_accuracy import probe  # noqa: E402  (the shared machine-speed probe, as the other benchmarks read it)


def split_classes(archive: Path, out: Path, seed: int) -> tuple[list[str], list[str]]:
    """out/known/{train,test}/CLASS/*.jpg for 6 random classes, out/unknown/CLASS/*.jpg (test images) for the rest."""
    with tarfile.open(archive) as tar:
        classes = sorted({m.name.split("/")[-2] for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")})
    known = sorted(random.Random(seed).sample(classes, 6))
    with tarfile.open(archive) as tar:
        for m in tar:
            if not (m.isfile() and m.name.endswith(".jpg")):
                continue
            split, cls, name = m.name.split("/")[-3:]
            if cls in known:
                target = out / "known" / split / cls / name
            elif split == "test":
                target = out / "unknown" / cls / name
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(m).read())
    return known, [c for c in classes if c not in known]


def cli(*args: str) -> tuple[str, float]:
    """(stdout, seconds) of `cnnmode ARGS` in a new process; the benchmark stops with its stderr if it fails."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cnnmode", *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"failed: cnnmode {' '.join(args)}\n{out.stderr[-2000:]}")
    return out.stdout, time.perf_counter() - start


def predict_latency(run: Path, images: list[Path], rounds: int = 5) -> dict[str, float]:
    """Median milliseconds per image of Predictor.predict over `images`, --reject off and auto alternated."""
    from cnnmode.deploy.predict import Predictor

    predictors = {mode: Predictor(run, device="cpu", reject=mode) for mode in ("off", "auto")}
    times: dict[str, list[float]] = {mode: [] for mode in predictors}
    for _ in range(rounds):
        for mode, p in predictors.items():
            start = time.perf_counter()
            p.predict(images, topk=1, batch_size=64)
            times[mode].append(1000 * (time.perf_counter() - start) / len(images))
    return {mode: statistics.median(t) for mode, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0, help="draws the known classes")
    ap.add_argument("--recipe", default="speed")
    ap.add_argument("--keep", type=Path, help="keep the data and the run here (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="key=value for the training run")
    args = ap.parse_args()
    print(f"probe before: {probe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        known, unknown = split_classes(args.data, work, args.seed)
        print(f"known: {', '.join(known)}; unknown: {', '.join(unknown)}", flush=True)
        out, wall = cli("train", "--recipe", args.recipe, "--quiet", f"data.path={work / 'known'}",
                        f"data.root={work / 'data'}", f"run.dir={work / 'runs'}", "run.name=known6", *args.overrides)
        run = work / "runs" / "known6"
        m = json.loads((run / "metrics.json").read_text())
        print(f"trained in {m['train_time_s']:.0f} s (wall {wall:.0f} s): test accuracy "
              f"{100 * m['test']['accuracy']:.2f}% on the 6 known classes", flush=True)
        cli("eval", str(run), "--unknown", str(work / "unknown"))
        r = json.loads((run / "eval" / "metrics.json").read_text())["rejection"]
        u = r["unknown"]
        print(f"\n| score | AUROC (known test vs {u['count']} unknown) |\n|---|---|")
        for name, auc in u["auroc"].items():
            print(f"| {name}{' (stored)' if name == r['score'] else ''} | {auc:.4f} |")
        print(f"\nat --reject auto (threshold {r['threshold']:.2f}): {100 * u['rejected']:.1f}% of unknown images "
              f"rejected; {100 * r['coverage']:.1f}% of known test images kept, accuracy {100 * r['accuracy_kept']:.2f}% "
              f"of them vs {100 * r['accuracy_all']:.2f}% of all", flush=True)
        said, wall = cli("calibrate", str(run))
        print(f"cnnmode calibrate (refit, whole process incl. imports and data): {wall:.1f} s; {said.splitlines()[0]}")
        size = (run / "model.unknowns.pt").stat().st_size / 2**20
        print(f"model.unknowns.pt: {size:.2f} MiB beside model.pt ({(run / 'model.pt').stat().st_size / 2**20:.2f} MiB)")
        images = sorted((work / "known" / "test").rglob("*.jpg"))[::6][:1000]
        lat = predict_latency(run, images)
        print(f"predict on {len(images)} images, batch 64, eager: {lat['off']:.3f} ms/image with --reject off, "
              f"{lat['auto']:.3f} ms/image with --reject auto ({100 * (lat['auto'] / lat['off'] - 1):+.1f}%)")
    print(f"probe after: {probe()}")


if __name__ == "__main__":
    main()
