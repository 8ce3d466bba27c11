"""A multi-label set built from the CIFAR-10 copy, and a training run on it: mAP, subset accuracy and time.

    python benchmarks/multilabel_mosaic.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--out runs/mosaic]
                                           [--recipe speed] [--build-only] [key=value ...]

Each image is a 2x2 mosaic of four CIFAR-10 images of the same split (64 px; every source image used once, in a
seeded order), labelled with the set of classes present (1-4 labels). train: 12,500 mosaics from the 50,000
training images; test: 2,500 from the official 10,000 test images. The set is written once to
`<out>/set/` (PNGs and `labels.csv`: path,labels,split) and reused. The run trains `cnnmode train --recipe
RECIPE` on it with `train.progressive_size=40` (the recipe's 20 px start is for 32 px images) and any further
keys, and prints the test mAP (macro and micro), subset accuracy, example-based F1, training time and wall time,
with the machine-speed probe before and after.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_accuracy import probe  # noqa: E402

SEED = 0
TILE = 32


def read_cifar(tar_path: Path) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Every image of the copy as (HWC uint8 array, class name), per split, in archive order."""
    out: dict[str, list[tuple[np.ndarray, str]]] = {"train": [], "test": []}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 3 and parts[-3] in out:
                image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                out[parts[-3]].append((np.asarray(image.resize((TILE, TILE))), parts[-2]))
    return out


def build_set(tar_path: Path, folder: Path) -> Path:
    """Write the mosaics and labels.csv under `folder` (once) and return the CSV's path."""
    csv_path = folder / "labels.csv"
    if csv_path.exists():
        return csv_path
    rng = np.random.default_rng(SEED)
    rows = ["path,labels,split"]
    for split, items in read_cifar(tar_path).items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        order = rng.permutation(len(items))
        for m in range(len(items) // 4):
            four = [items[i] for i in order[4 * m:4 * m + 4]]
            grid = np.concatenate([np.concatenate([four[0][0], four[1][0]], 1),
                                   np.concatenate([four[2][0], four[3][0]], 1)], 0)
            name = f"{split}/{m:05d}.png"
            Image.fromarray(grid).save(folder / name)
            rows.append(f"{name},{';'.join(sorted({c for _, c in four}))},{split}")
    tmp = csv_path.with_suffix(".partial")
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(csv_path)
    return csv_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the CIFAR-10 JPEG copy (.tar.gz)")
    ap.add_argument("--out", default="runs/mosaic")
    ap.add_argument("--recipe", default="speed")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    csv_path = build_set(Path(args.data), out / "set")
    print(f"set {csv_path} ready in {time.perf_counter() - start:.0f} s", flush=True)
    if args.build_only:
        return
    name = f"{args.recipe}-mosaic-{int(time.time())}"
    keys = [f"data.path={csv_path}", f"data.root={out / 'data'}", f"run.dir={out}", f"run.name={name}",
            "train.progressive_size=40", *args.overrides]
    # decode the mosaics into the cache first, so the timing is the training's alone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cnnmode.config import resolve_config
    from cnnmode.data import build_data
    from cnnmode.engine.device import pick_device

    build_data(resolve_config(args.recipe, overrides=keys[:2]), pick_device("cpu"))
    print(f"probe before: {probe()} img/s", flush=True)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnmode", "train", "--recipe", args.recipe, "--quiet", *keys], check=True)
    wall = time.perf_counter() - wall
    print(f"probe after: {probe()} img/s", flush=True)
    m = json.loads((out / name / "metrics.json").read_text())
    t = m["test"]
    print(f"multilabel mosaic {args.recipe}: mAP {100 * t['map']:.2f}% (micro {100 * t['map_micro']:.2f}%), "
          f"subset accuracy {100 * t['subset_accuracy']:.2f}%, F1 examples {100 * t['f1_samples']:.2f}%, "
          f"Hamming loss {t['hamming_loss']:.4f}; train {m['train_time_s']:.0f} s, wall {wall:.0f} s "
          f"({m['epochs_run']} epochs, {m['data']['img_size']} px); run {out / name}")


if __name__ == "__main__":
    main()
