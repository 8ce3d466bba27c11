"""Images from disk → the tensors a model expects, exactly as its artifact describes."""
from __future__ import annotations

import glob
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

from cnnmode.data.decode import DECODE_ERRORS, pil_to_mode
from cnnmode.data.archive import Limits
from cnnmode.data.source_layout import IMAGE_SUFFIXES, file_problem
from cnnmode.errors import UsageError


INPUT_LIMITS = Limits.from_mb_gb(100, 20)  # data.max_file_mb's default: a larger "image" is not read


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their images, recursively, sorted) and glob patterns → image paths."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else []
            if not matches:
                raise UsageError(f"no such image, folder or pattern: {item}")
            paths += matches
    return paths


def resize_crop(preprocess: dict) -> v2.Transform:
    """The geometric half: resize (shorter side, antialiased) + centre crop to the model's size. Works on one
    image or a batch, uint8 or float."""
    size = preprocess["img_size"]
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def normalise(preprocess: dict) -> v2.Transform:
    """The numeric half: uint8 → float in [0, 1] → normalised with the model's mean and std."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocess["mean"], preprocess["std"])])


def transform_for(preprocess: dict) -> v2.Transform:
    """A PIL image or HWC array → the model's input: resize_crop, then normalise."""
    return v2.Compose([v2.ToImage(), resize_crop(preprocess), normalise(preprocess)])


def load_images(paths: list[Path], preprocess: dict) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """(batch, paths that loaded, [(path, reason) for those that did not]); any PIL mode, EXIF orientation applied."""
    tf = transform_for(preprocess)
    tensors, ok, failed = [], [], []
    for path in paths:
        problem = file_problem(path, INPUT_LIMITS)  # a pipe or device would block the read forever
        if problem:
            failed.append((path, problem))
            continue
        try:
            with Image.open(path) as img:
                tensors.append(tf(pil_to_mode(img, preprocess["channels"])))
            ok.append(path)
        except DECODE_ERRORS as e:
            failed.append((path, f"{type(e).__name__}: {e}"))
    batch = torch.stack(tensors) if tensors else torch.zeros(0, preprocess["channels"], preprocess["img_size"],
                                                              preprocess["img_size"])
    return batch, ok, failed
