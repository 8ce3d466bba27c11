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
from pathlib import Path

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


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def convert_idx(folder: Path, out: Path, names: list[str] | None = None) -> dict[str, dict[str, int]]:
    """MNIST-style IDX files in `folder` → out/{train,test}/CLASS/NNNNN.png; class folders are the label
    numbers, or `names[label]`. Returns images per class per split."""
    folder = Path(folder)
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
            if names and int(labels.max()) >= len(names):
                raise UsageError(f"--names gives {len(names)} classes but the labels go up to {int(labels.max())}")
            tally: Counter = Counter()
            for i, (image, label) in enumerate(zip(images, labels.tolist())):
                cls = names[label] if names else str(label)
                (tmp / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(image).astype(np.uint8), "L").save(tmp / split / cls /
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
