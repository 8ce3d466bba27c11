"""Label errors (#32): flip 5% of a CIFAR-10 training subset's labels (seeded), run `cnnmode cv` and
`cnnmode data labels`, and measure how many of the flipped images come out on top.

    python benchmarks/label_errors.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--per-class 2000]
                                      [--flip 0.05] [--folds 4] [--recipe speed] [--seed 0] [key=value ...]

The subset takes the first --per-class training images of each class; --flip of them move to a uniformly drawn
other class (every file is renamed img<N>.jpg, so names say nothing). Test: 200 clean test images per class (each
fold model is scored on them). Prints the cv accuracy, then the precision and recall of the flipped set among the
top-ranked images (as many as were flipped, so precision = recall there) and among the images cleanlab flags,
and the time of each part. Read times against ../shared/bench/probe.py, printed before and after.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from time_to_accuracy import probe  # noqa: E402  (the shared machine-speed probe, as the other benchmarks read it)
from unknowns import cli  # noqa: E402  (a cnnmode command, timed, stopping the benchmark if it fails)


def noisy_subset(archive: Path, out: Path, per_class: int, flip: float, seed: int, test_per_class: int = 200
                 ) -> set[str]:
    """out/train/CLASS/img<N>.jpg with `flip` of them under a wrong class, out/test/CLASS/*.jpg; the flipped names."""
    rng = random.Random(seed)
    taken: dict[tuple[str, str], int] = {}
    blobs: list[tuple[str, bytes]] = []
    with tarfile.open(archive) as tar:
        for m in tar:
            if not (m.isfile() and m.name.endswith(".jpg")):
                continue
            split, cls, name = m.name.split("/")[-3:]
            limit = per_class if split == "train" else test_per_class
            if taken.get((split, cls), 0) >= limit:
                continue
            taken[(split, cls)] = taken.get((split, cls), 0) + 1
            data = tar.extractfile(m).read()
            if split == "train":
                blobs.append((cls, data))
            else:
                (out / "test" / cls).mkdir(parents=True, exist_ok=True)
                (out / "test" / cls / name).write_bytes(data)
    classes = sorted({c for c, _ in blobs})
    rng.shuffle(blobs)
    flipped = set(rng.sample(range(len(blobs)), round(flip * len(blobs))))
    names = set()
    for i, (cls, data) in enumerate(blobs):
        label = rng.choice([c for c in classes if c != cls]) if i in flipped else cls
        path = out / "train" / label / f"img{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if i in flipped:
            names.add(path.relative_to(out).as_posix())
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--recipe", default="speed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the data and the runs here (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="key=value for every fold")
    args = ap.parse_args()
    print(f"probe before: {probe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        flipped = noisy_subset(args.data, work / "noisy", args.per_class, args.flip, args.seed)
        print(f"subset: {args.per_class} per class, {len(flipped)} labels flipped ({100 * args.flip:g}%)", flush=True)
        cv_dir = work / "cv"
        _, cv_s = cli("cv", "--recipe", args.recipe, "--folds", str(args.folds), "--out", str(cv_dir), "--quiet",
                      f"data.path={work / 'noisy'}", f"data.root={work / 'data'}", *args.overrides)
        cv = json.loads((cv_dir / "cv.json").read_text())
        print(f"cv: {args.folds} folds in {cv_s:.0f} s; validation accuracy (on noisy labels) "
              f"{100 * cv['mean_val_acc']:.2f}% ± {100 * cv['std_val_acc']:.2f}, clean test accuracy "
              f"{100 * cv['mean_test_acc']:.2f}%", flush=True)
        said, labels_s = cli("data", "labels", str(cv_dir))
        print(f"cnnmode data labels: {labels_s:.1f} s; {said.splitlines()[0]}")

        from cnnmode.data.tools.label_errors import held_out, quality_order, rank_label_errors, relative_name

        held = held_out(cv_dir)
        names = [relative_name(n, held.data) for n in held.names]
        top = {names[i] for i in quality_order(held)[:len(flipped)]}
        hit = len(top & flipped)
        print(f"\ntop-ranked {len(flipped)} ({100 * args.flip:g}%): precision {hit / len(top):.3f}, "
              f"recall {hit / len(flipped):.3f}")
        flagged = {relative_name(r["file"], held.data) for r in rank_label_errors(held)}
        hit = len(flagged & flipped)
        print(f"cleanlab's flagged set ({len(flagged)} images): precision {hit / max(len(flagged), 1):.3f}, "
              f"recall {hit / len(flipped):.3f}")
    print(f"probe after: {probe()}")


if __name__ == "__main__":
    main()
