"""Shared fixtures: tiny generated image datasets (no network, seconds to make)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("circle", "square", "stripes")

# Under pytest-xdist (`make test` runs `-n auto`) each worker, and every CLI or server process it starts, gets its
# share of the cores: torch processes that share cores run many times slower.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(max(1, (os.cpu_count() or 1) // WORKERS))

# `make test` runs `--dist loadfile`: the tests of one file on one worker, one after another, so that a module's
# fixtures are made once, and the torchrun tests (tests/workflows/test_ddp.py) never run two at a time.
# (`loadgroup` would group freer, but with pytest 9 pytest-xdist 3.8 ignores the groups: it renames a test id
# through an attribute pytest no longer reads.)


def make_image(cls: int, rng: np.random.Generator, size: int = 32, mode: str = "RGB") -> Image.Image:
    """A noisy image whose class is visible: a bright blob, a dark square, or stripes."""
    arr = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    y, x = rng.integers(size // 4, 3 * size // 4, 2)
    r = size // 5
    if cls == 0:
        yy, xx = np.ogrid[:size, :size]
        arr[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = (250, 200, 40)
    elif cls == 1:
        arr[max(0, y - r):y + r, max(0, x - r):x + r] = (20, 30, 200)
    else:
        arr[:, ::4] = (230, 230, 230)
    img = Image.fromarray(arr, "RGB")
    return img.convert(mode) if mode != "RGB" else img


def write_tree(root: Path, per_class: dict[str, int], size: int = 32, seed: int = 0, mode: str = "RGB",
               suffix: str = ".png") -> Path:
    """Write `root/<split>/<class>/<i>.png` for each split given as {split: images per class}."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                make_image(c, rng, size, mode).save(folder / f"{i:04d}{suffix}")
    return root


def make_multilabel_image(present: list[int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A noisy image holding each shape of `present` (0 blob, 1 square, 2 stripes), in its own quarter."""
    arr = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    h = size // 2
    yy, xx = np.ogrid[:h, :h]
    if 2 in present:
        arr[h:, :h][:, ::4] = (230, 230, 230)
    if 0 in present:
        arr[:h, :h][(yy - h // 2) ** 2 + (xx - h // 2) ** 2 <= (h // 3) ** 2] = (250, 200, 40)
    if 1 in present:
        arr[h // 4:3 * h // 4, h + h // 4:h + 3 * h // 4] = (20, 30, 200)
    return Image.fromarray(arr, "RGB")


def write_multilabel_csv(root: Path, per_split: dict[str, int], seed: int = 0, size: int = 32) -> Path:
    """`root/images/*.png` and `root/labels.csv` (path,labels,split): each image holds a random subset of the
    three shapes (possibly none); labels are the shape names present, `;`-separated."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["path,labels,split"]
    for split, n in per_split.items():
        for i in range(n):
            present = [c for c in range(3) if rng.random() < 0.45]
            name = f"images/{split}-{i:04d}.png"
            make_multilabel_image(present, rng, size).save(root / name)
            rows.append(f"{name},{';'.join(CLASSES[c] for c in present)},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def write_noise(folder: Path, count: int, seed: int = 0, size: int = 32) -> Path:
    """`folder/0.png ...`: uniform-noise RGB images, of no class a shapes model knows (unknown images)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_multilabel(tmp_path_factory) -> Path:
    """A multi-label CSV list: 120 train and 40 test 32 px PNGs, each with 0-3 of the three shape labels."""
    return write_multilabel_csv(tmp_path_factory.mktemp("multi"), {"train": 120, "test": 40})


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """train/ (30 per class) and test/ (10 per class) of 32 px RGB PNGs, 3 classes."""
    return write_tree(tmp_path_factory.mktemp("tiny") / "shapes", {"train": 30, "test": 10})


CIFAR = Path(os.environ.get("CNNMODE_CIFAR_JPEG") or
             Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz")


def cifar_slice(root: Path, per_class: dict[str, int]) -> Path:
    """The first `per_class[split]` images of each class of each split of the shared CIFAR-10 JPEG copy, as a
    `split/class/NNNN.jpg` tree (the JPEG bytes as they are): a real-data slice without decoding all 60,000."""
    import tarfile

    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(CIFAR) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] not in per_class:
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) < per_class[parts[-3]]:
                counts[key] = counts.get(key, 0) + 1
                target = root / parts[-3] / parts[-2] / parts[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return root


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300,
            process: bool = False) -> subprocess.CompletedProcess:
    """Run the `cnnmode` entry point (`cnnmode.cli.main`, what the console script calls) on `args` and return its
    exit code, stdout and stderr. In this process by default: a new Python process costs seconds of imports, and
    the suite runs many; `process=True` starts a real one (for exit by signal, environment or stdin)."""
    if process:
        env = dict(os.environ, COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "cnnmode", *args], capture_output=True, text=True,
                              cwd=cwd, timeout=timeout, env=env)
    return _run_in_process([str(a) for a in args], cwd)


def _run_in_process(argv: list[str], cwd: Path | None) -> subprocess.CompletedProcess:
    """`main(argv)` with stdout/stderr captured; the working folder, the environment and torch's global settings
    are put back afterwards, as a process's end would."""
    import contextlib
    import io

    import torch

    from cnnmode.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_torch = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    os.environ["COLUMNS"] = "200"
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse: usage errors (2) and --help/--version (0)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_torch[0])
        torch.use_deterministic_algorithms(saved_torch[1])
    return subprocess.CompletedProcess(["cnnmode", *argv], code, out.getvalue(), err.getvalue())


def fast_overrides(tmp: Path, data: Path, **extra: object) -> list[str]:
    """Overrides for a seconds-long CPU run on tiny data."""
    keys = {"data.path": data, "data.root": tmp / "data", "run.dir": tmp / "runs", "model.name": "simplecnn",
            "train.epochs": 1, "train.batch_size": 16, "train.eval_batch_size": 32, "optim.name": "adam",
            "optim.lr": 0.003, "sched.name": "constant"} | extra
    return [f"{k}={v}" for k, v in keys.items()]
