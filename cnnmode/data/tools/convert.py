"""`cnnmode data convert`: other dataset formats into a class-folder tree that every verb reads.

- IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST): a folder with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (each optionally `.gz`) → `train/` and `test/` of PNGs.
- COCO detection annotations (`instances_*.json` and its image folder) → one crop per object box, in a folder
  per category.
The tree is built in a temporary folder beside the output and moved into place when complete.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image

from cnnmode.data.decode import DECODE_ERRORS
from cnnmode.errors import UsageError
from cnnmode.files import atomic_folder

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format; gzip-compressed when it ends in .gz) as a numpy array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UsageError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - 4 - 4 * ndim != expected:
        raise UsageError(f"{path}: header says {shape} but the file holds {len(raw) - 4 - 4 * ndim} bytes of data")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


def _as_pixels(images: np.ndarray, path: Path) -> np.ndarray:
    """IDX image values as uint8 pixels: floats in [0, 1] scaled by 255, values in 0-255 kept; anything else is
    refused (a silent cast would blank or wrap the images)."""
    low, high = float(images.min(initial=0)), float(images.max(initial=0))
    if images.dtype.kind == "f" and low >= 0 and high <= 1:
        return np.rint(images.astype(np.float64) * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(images).astype(np.uint8) if images.dtype.kind == "f" else images.astype(np.uint8)
    raise UsageError(f"{path}: image values run from {low:g} to {high:g}; expected 0-255 (or 0-1 for floats)")


def check_names(names: list[str]) -> list[str]:
    """--names as class folder names: each a plain name (no / or \\, not . or .., not empty), none twice."""
    bad = [n for n in names if n.strip() in ("", ".", "..") or "/" in n or "\\" in n]
    if bad:
        raise UsageError(f"--names: {bad[0]!r} is not a plain class name (no / or \\, not . or .., not empty)")
    twice = sorted({n.strip() for n in names if [m.strip() for m in names].count(n.strip()) > 1})
    if twice:
        raise UsageError(f"--names: {', '.join(twice)} given more than once; each class needs its own name")
    return [n.strip() for n in names]


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def convert_idx(folder: Path, out: Path, names: list[str] | None = None) -> dict[str, dict[str, int]]:
    """MNIST-style IDX files in `folder` → out/{train,test}/CLASS/NNNNN.png; class folders are the label
    numbers, or `names[label]`. Returns images per class per split."""
    folder = Path(folder)
    names = check_names(names) if names else None
    found = {split: (_find(folder, imgs), _find(folder, labels)) for split, (imgs, labels) in IDX_FILES.items()}
    if not all(found["train"]):
        raise UsageError(f"{folder}: no {IDX_FILES['train'][0]}[.gz] and {IDX_FILES['train'][1]}[.gz] found")
    counts: dict[str, dict[str, int]] = {}
    with atomic_folder(out) as tmp:
        for split, (img_path, label_path) in found.items():
            if not (img_path and label_path):
                continue
            images, labels = read_idx(img_path), read_idx(label_path)
            if images.ndim != 3 or len(images) != len(labels):
                raise UsageError(f"{img_path}: {images.shape} images do not match {len(labels)} labels")
            images = _as_pixels(images, img_path)
            if names and int(labels.max()) >= len(names):
                raise UsageError(f"--names gives {len(names)} classes but the labels go up to {int(labels.max())}")
            tally: Counter = Counter()
            for i, (image, label) in enumerate(zip(images, labels.tolist())):
                cls = names[label] if names else str(label)
                (tmp / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(image), "L").save(tmp / split / cls /
                                                                                       f"{i:05d}.png")
                tally[cls] += 1
            counts[split] = dict(sorted(tally.items()))
    return counts


def convert_coco(annotations: Path, images: Path, out: Path, min_size: int = 8, pad: float = 0.0,
                 split: str = "") -> dict[str, int]:
    """Crop every object box of a COCO annotation file into out/[SPLIT/]CATEGORY/IMAGEID_ANNID.jpg (crowd boxes
    and boxes smaller than `min_size` px on a side are left out; `pad` widens each box by that fraction per side).
    Returns crops per category; images that are missing or unreadable are skipped."""
    try:
        coco = json.loads(Path(annotations).read_text())
        categories = {c["id"]: _folder_name(str(c["name"])) for c in coco["categories"]}
        files = {im["id"]: im["file_name"] for im in coco["images"]}
        by_image: dict[int, list[dict]] = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{annotations} is not a readable COCO annotation file ({type(e).__name__}: {e})") from None
    _check_coco(categories, coco["categories"], files, annotations)
    tally: Counter = Counter()
    with atomic_folder(out) as tmp:
        root = tmp / split if split else tmp
        for image_id, anns in sorted(by_image.items()):
            try:
                with Image.open(Path(images) / files[image_id]) as img:
                    img = img.convert("RGB")
                    for a in anns:
                        crop = _crop(img, a, min_size, pad)
                        if crop is not None:
                            name = categories[a["category_id"]]
                            (root / name).mkdir(parents=True, exist_ok=True)
                            crop.save(root / name / f"{image_id}_{a['id']}.jpg", quality=95)
                            tally[name] += 1
            except (KeyError, FileNotFoundError, *DECODE_ERRORS):
                continue
    return dict(sorted(tally.items()))


def _check_coco(categories: dict, raw: list[dict], files: dict, annotations: Path) -> None:
    """Refuse categories that would share a folder and image paths that leave the images folder."""
    seen: dict[str, str] = {}
    for c in raw:
        folder = categories[c["id"]]
        if folder in seen and seen[folder] != str(c["name"]):
            raise UsageError(f"{annotations}: categories {seen[folder]!r} and {str(c['name'])!r} would share the "
                             f"folder {folder!r}; rename one")
        seen[folder] = str(c["name"])
    for name in files.values():
        path = PurePosixPath(str(name).replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or PureWindowsPath(str(name)).drive:
            raise UsageError(f"{annotations}: image file_name {name!r} leaves --coco-images; give paths inside it")


def _folder_name(name: str) -> str:
    """A category name as one safe folder name: separators replaced, `.`/`..`/empty named `_`."""
    name = name.replace("/", "_").replace("\\", "_").strip()
    return "_" if name in ("", ".", "..") else name


def _crop(img: Image.Image, ann: dict, min_size: int, pad: float) -> Image.Image | None:
    if ann.get("iscrowd"):
        return None
    x, y, w, h = ann["bbox"]
    if min(w, h) < min_size:
        return None
    x0, y0 = max(0, int(x - pad * w)), max(0, int(y - pad * h))
    x1, y1 = min(img.width, int(round(x + w + pad * w))), min(img.height, int(round(y + h + pad * h)))
    return img.crop((x0, y0, x1, y1)) if x1 > x0 and y1 > y0 else None
