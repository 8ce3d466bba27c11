"""A generated dataset with one of each problem `data check` looks for, and the findings it must produce."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def distinct_image(rng: np.random.Generator, size: int = 32) -> Image.Image:
    """An image with its own coarse structure (a random 4x4 pattern, enlarged, plus noise): no two are alike."""
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB").resize((size, size),
                                                                                            Image.BICUBIC)
    arr = np.asarray(coarse, dtype=np.int16) + rng.integers(-10, 10, (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def clean_tree(root: Path, counts: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """root/SPLIT/CLASS/NNNN.png with distinct images, `counts[split][class]` of them."""
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                distinct_image(rng).save(root / split / cls / f"img{i}.png")
    return root


def plant_problems(root: Path) -> set[tuple[str, str]]:
    """Add one of each problem to a clean tree of classes a (40), b (12), c (1) in train and a, b in test;
    returns the (kind, path) findings expected (groups as their sorted paths joined by '|')."""
    rng = np.random.default_rng(1)
    (root / "train/a/empty.png").write_bytes(b"")
    jpeg = root / "train/a/trunc.jpg"
    distinct_image(rng, 64).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:-400])
    (root / "train/b/notimage.png").write_text("this is not a picture")
    distinct_image(rng, 8).save(root / "train/b/tiny.png")
    distinct_image(rng).convert("CMYK").save(root / "train/c/cmyk.jpg", quality=95)
    rotated = distinct_image(rng)
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / "train/c/rotated.jpg", exif=exif, quality=95)
    shutil.copy(root / "train/a/img0.png", root / "train/a/dup_x.png")
    Image.open(root / "train/b/img1.png").save(root / "train/b/near.jpg", quality=90)  # re-encoded: a near copy
    shutil.copy(root / "train/a/img2.png", root / "test/a/leak.png")
    (root / "notes.txt").write_text("stray file")
    (root / "train/a/readme.txt").write_text("not an image")
    return {("empty", "train/a/empty.png"), ("truncated", "train/a/trunc.jpg"),
            ("not_image", "train/b/notimage.png"), ("too_small", "train/b/tiny.png"),
            ("unusual_mode", "train/c/cmyk.jpg"), ("exif_rotation", "train/c/rotated.jpg"),
            ("duplicate", "train/a/dup_x.png|train/a/img0.png"), ("duplicate", "train/b/img1.png|train/b/near.jpg"),
            ("leak", "test/a/leak.png|train/a/img2.png"), ("missing_class", "test:c"),
            ("imbalance", "train:a/c"), ("layout", "stray:notes.txt"), ("layout", "not_image_suffix:train/a/readme.txt")}


def as_keys(report: dict) -> set[tuple[str, str]]:
    """The report's findings in the form `plant_problems` returns."""
    keys = set()
    for f in report["findings"]:
        if "files" in f:
            keys.add((f["kind"], "|".join(sorted(x["path"] for x in f["files"]))))
        elif f["kind"] == "missing_class":
            keys.add((f["kind"], f"{f['split']}:{','.join(f['classes'])}"))
        elif f["kind"] == "imbalance":
            keys.add((f["kind"], f"train:{f['largest']}/{f['smallest']}"))
        elif f["kind"] == "layout":
            keys |= {(f["kind"], f"{f['layout']}:{p}") for p in f["paths"]}
        else:
            keys.add((f["kind"], f["path"]))
    return keys


@pytest.fixture
def planted(tmp_path) -> tuple[Path, set[tuple[str, str]]]:
    """(dataset folder, expected findings)."""
    root = clean_tree(tmp_path / "ds", {"train": {"a": 40, "b": 12, "c": 1}, "test": {"a": 5, "b": 5}})
    return root, plant_problems(root)
