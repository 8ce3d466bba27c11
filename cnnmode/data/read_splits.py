"""Reading a source into splits: named torchvision datasets as tensors, and class-folder trees or archives either
decoded once into a cached uint8 tensor (small images) or listed as files to stream (large images)."""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnmode.config import Config
from cnnmode.data import csvlist, source_layout
from cnnmode.data.archive import Limits
from cnnmode.data.decode import GRAY_MODES, decode_many, probe, verify_file
from cnnmode.data.labels import label_tensor
from cnnmode.errors import CnnModeError, RunError, UsageError
from cnnmode.files import atomic_torch_save, torch_load

SMALL_MAX = 64
CACHE_VERSION = 2
log = logging.getLogger("cnnmode")


@dataclass
class Split:
    """One split: uint8 images (tensor mode) or file paths (stream mode), and labels."""
    labels: torch.Tensor
    images: torch.Tensor | None = None
    files: list[Path] | None = None
    names: list[str] | None = None  # where each sample came from, when known

    def take(self, idx: torch.Tensor) -> "Split":
        """The samples at `idx`."""
        pick = idx.tolist()
        files = [self.files[i] for i in pick] if self.files is not None else None
        names = [self.names[i] for i in pick] if self.names is not None else None
        return Split(self.labels[idx], self.images[idx] if self.images is not None else None, files, names)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Found:
    """What a source holds: its splits (`train`, and `test`/`val` when it has them), the class names, the image
    channels, the native image size (0 when streaming), the files skipped with their reasons, and the mode:
    `tensor` (decoded into memory) or `stream` (files read per batch)."""
    splits: dict[str, Split]
    classes: list[str]
    channels: int
    native_size: int
    skipped: list[tuple[str, str]]
    mode: str


def _channels(wanted: int, modes: list[str]) -> int:
    return wanted or (1 if modes and all(m in GRAY_MODES for m in modes) else 3)


def load_named(name: str, root: str, channels: int) -> Found:
    """A torchvision dataset (downloaded into `root` when online) as uint8 tensors."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "mnist": datasets.MNIST,
           "fashion-mnist": datasets.FashionMNIST}[name]
    splits, classes = {}, []
    for split, is_train in (("train", True), ("test", False)):
        try:
            ds = cls(root, train=is_train, download=True)
        except Exception as e:  # torchvision raises URLError, RuntimeError, ... when offline
            raise RunError(f"could not load or download {name} into {root} ({type(e).__name__}: {e}); "
                           "with no internet, pass data.path=<class-folder tree or archive>") from None
        x = torch.as_tensor(ds.data)
        x = x.unsqueeze(-1) if x.ndim == 3 else x
        splits[split] = Split(torch.as_tensor(ds.targets, dtype=torch.long), x.permute(0, 3, 1, 2).contiguous())
        classes = list(ds.classes)
    native = splits["train"].images.shape[1]
    channels = channels or native
    if channels != native:
        for s in splits.values():
            s.images = _convert_channels(s.images, channels)
    return Found(splits, classes, channels, splits["train"].images.shape[-1], [], "tensor")


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _decode_splits(path: Path, archive, layout: source_layout.Layout, size: int, channels: int, limits: Limits,
                   ) -> tuple[dict[str, Split], list[tuple[str, str]]]:
    names = [n for items in layout.splits.values() for n, _ in items]
    blobs, unread = source_layout.read_files(path, archive, names, limits)
    splits, skipped = {}, list(layout.skipped)
    for split, items in layout.splits.items():
        images, kept, reasons = decode_many([blobs.get(n, b"") for n, _ in items], size, channels)
        skipped += [(items[i][0], unread.get(items[i][0]) or r) for i, r in enumerate(reasons) if r]
        labels = label_tensor([items[i][1] for i in kept], len(layout.classes), layout.multilabel)
        splits[split] = Split(labels, images, names=[items[i][0] for i in kept])
    return splits, skipped


def common_size(sizes: list[tuple[int, int]]) -> int:
    """The side the images are stored at: the most common longer side (the larger on a tie), so that one odd
    image sorting first cannot set the resolution of the whole set."""
    counts = Counter(max(s) for s in sizes)
    return max(counts, key=lambda side: (counts[side], side))


def _read_cache(cache: Path) -> dict | None:
    """The decoded-image cache, or None when there is none or it is damaged (then it is removed and rebuilt)."""
    if not cache.exists():
        return None
    try:
        saved = torch_load(cache)
        log.info("using cached images %s", cache)
        return saved
    except CnnModeError as e:
        log.warning("the image cache %s cannot be read (%s); rebuilding it", cache, e)
        cache.unlink(missing_ok=True)
        return None


def load_files(cfg: Config, cache_root: Path) -> Found:
    """A folder tree or archive: decoded into a cached tensor when its images are small, else listed to stream."""
    limits = Limits.from_mb_gb(cfg.data.max_file_mb, cfg.data.max_total_gb)
    if csvlist.is_list(cfg.data.path):
        path, layout = csvlist.list_layout(cfg.data.path, cfg.data.task)
        archive, source_key = None, csvlist.content_key(cfg.data.path, path, layout)
    else:
        path, files, dirs, archive = source_layout.open_source(cfg.data.path, limits)
        layout = source_layout.find_layout(files, dirs, cfg.data.path)
        source_key = source_layout.content_key(path)
    if "train" not in layout.splits:
        raise UsageError(f"{cfg.data.path}: no training images")
    sample, _ = source_layout.read_files(path, archive, [n for n, _ in layout.splits["train"]], limits, first=32)
    probes = []
    for blob in sample.values():
        try:
            probes.append(probe(blob))
        except Exception:  # a corrupt file among the probes is counted later
            continue
    if not probes:
        raise RunError(f"{cfg.data.path}: none of the first {len(sample)} training images could be read")
    channels = _channels(cfg.data.channels, [m for _, m in probes])
    if max(max(s) for s, _ in probes) <= SMALL_MAX:
        size = common_size([s for s, _ in probes])
        log.info("images are stored at %d px: the most common size among %d sampled training images; images of "
                 "other sizes are resized to it", size, len(probes))
        task = ":multilabel" if layout.multilabel else ""  # the same list read as label sets caches apart
        key = hashlib.sha256(f"{CACHE_VERSION}:{source_key}:{size}:{channels}{task}".encode()).hexdigest()[:24]
        cache = cache_root / f"images-{key}.pt"
        saved = _read_cache(cache)
        if saved is not None:
            splits = {k: Split(v["labels"], v["images"], names=v["names"]) for k, v in saved["splits"].items()}
            return Found(splits, saved["classes"], channels, size, [tuple(s) for s in saved["skipped"]], "tensor")
        log.info("decoding %d images from %s (once; cached for next runs)", sum(map(len, layout.splits.values())), path)
        splits, skipped = _decode_splits(path, archive, layout, size, channels, limits)
        atomic_torch_save({"splits": {k: {"labels": s.labels, "images": s.images, "names": s.names}
                                     for k, s in splits.items()},
                           "classes": layout.classes, "skipped": [list(s) for s in skipped]}, cache)
        return Found(splits, layout.classes, channels, size, skipped, "tensor")
    folder = path
    if archive:
        folder = cache_root / f"extracted-{source_key}"
        if not (folder / ".complete").exists():
            archive.extract_to(folder, {n for items in layout.splits.values() for n, _ in items})
            (folder / ".complete").touch()
    unread = archive.damaged if archive else {}
    splits, skipped = {}, list(layout.skipped)
    for split, items in layout.splits.items():
        good = []
        for name, label in items:
            reason = (unread.get(name) or source_layout.file_problem(folder / name, limits)
                      or verify_file(folder / name))
            (skipped.append((name, reason)) if reason else good.append((folder / name, label)))
        splits[split] = Split(label_tensor([y for _, y in good], len(layout.classes), layout.multilabel),
                              files=[p for p, _ in good],
                              names=[str(p) for p, _ in good])
    return Found(splits, layout.classes, channels, 0, skipped, "stream")


