"""Data: resolve `data.path` into train/val/test loaders, the class names and the normalisation.

Small images (<= 64 px) are decoded once into a uint8 tensor cached under `<data.root>/cache/`, keyed by the
source's content; large images stream from disk through a DataLoader.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnmode.config import Config
from cnnmode.data import sources
from cnnmode.data.decode import GRAY_MODES, decode_many, probe, verify_file
from cnnmode.data.loaders import ImageFiles, StreamLoader, TensorLoader
from cnnmode.data.augment import stream_transforms
from cnnmode.data.splits import stratified_fold, stratified_holdout, stratified_subset
from cnnmode.errors import RunError, UsageError
from cnnmode.files import atomic_torch_save, torch_load

SMALL_MAX = 64
CACHE_VERSION = 2
TEST_SEED = 20_260_101  # the carved test split must not move with train.seed
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
class DataBundle:
    """Everything the engine needs from the data."""
    train: TensorLoader | StreamLoader
    val: TensorLoader | StreamLoader
    test: TensorLoader | StreamLoader
    classes: list[str]
    mean: list[float]
    std: list[float]
    channels: int
    img_size: int
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    val_is_test: bool = False

    def sizes(self) -> dict[str, int]:
        """Images per split."""
        return {k: len(getattr(self, k).labels) for k in ("train", "val", "test")}


def _channels(wanted: int, modes: list[str]) -> int:
    return wanted or (1 if modes and all(m in GRAY_MODES for m in modes) else 3)


def load_named(name: str, root: str, channels: int) -> tuple[dict[str, Split], list[str], int]:
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
    return splits, classes, channels


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _decode_splits(path: Path, archive, layout: sources.Layout, size: int, channels: int,
                   ) -> tuple[dict[str, Split], list[tuple[str, str]]]:
    names = [n for items in layout.splits.values() for n, _ in items]
    blobs = sources.read_bytes(path, archive, names)
    splits, skipped = {}, list(layout.skipped)
    for split, items in layout.splits.items():
        images, kept, reasons = decode_many([blobs.get(n, b"") for n, _ in items], size, channels)
        skipped += [(items[i][0], r) for i, r in enumerate(reasons) if r]
        labels = torch.tensor([items[i][1] for i in kept], dtype=torch.long)
        splits[split] = Split(labels, images, names=[items[i][0] for i in kept])
    return splits, skipped


def load_files(cfg: Config, cache_root: Path) -> tuple[dict[str, Split], list[str], int, int, list, str]:
    """A folder tree or archive: (splits, classes, channels, native size or 0 for streaming, skipped, mode)."""
    path, files, dirs, archive = sources.open_source(cfg.data.path)
    layout = sources.find_layout(files, dirs, cfg.data.path)
    train_names = {n for n, _ in layout.splits["train"]}
    sample = (archive.read_first(train_names, 32) if archive
              else {n: (path / n).read_bytes() for n, _ in layout.splits["train"][:32]})
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
        size = max(probes[0][0])
        key = hashlib.sha256(f"{CACHE_VERSION}:{sources.content_key(path)}:{size}:{channels}".encode()).hexdigest()[:24]
        cache = cache_root / f"images-{key}.pt"
        if cache.exists():
            log.info("using cached images %s", cache)
            saved = torch_load(cache)
            splits = {k: Split(v["labels"], v["images"], names=v["names"]) for k, v in saved["splits"].items()}
            return splits, saved["classes"], channels, size, [tuple(s) for s in saved["skipped"]], "tensor"
        log.info("decoding %d images from %s (once; cached for next runs)", sum(map(len, layout.splits.values())), path)
        splits, skipped = _decode_splits(path, archive, layout, size, channels)
        atomic_torch_save({"splits": {k: {"labels": s.labels, "images": s.images, "names": s.names}
                                     for k, s in splits.items()},
                           "classes": layout.classes, "skipped": [list(s) for s in skipped]}, cache)
        return splits, layout.classes, channels, size, skipped, "tensor"
    folder = path
    if archive:
        folder = cache_root / f"extracted-{sources.content_key(path)}"
        if not (folder / ".complete").exists():
            archive.extract_to(folder)
            (folder / ".complete").touch()
    splits, skipped = {}, list(layout.skipped)
    for split, items in layout.splits.items():
        good = []
        for name, label in items:
            reason = verify_file(folder / name)
            (skipped.append((name, reason)) if reason else good.append((folder / name, label)))
        splits[split] = Split(torch.tensor([y for _, y in good], dtype=torch.long), files=[p for p, _ in good],
                              names=[str(p) for p, _ in good])
    return splits, layout.classes, channels, 0, skipped, "stream"


def _assign_splits(found: dict[str, Split], cfg: Config) -> tuple[Split, Split, Split, bool]:
    """train/val/test from what the source has, carving what it lacks (stratified, seeded)."""
    train = found["train"]
    test = found["test"] if "test" in found else found.get("val")
    if test is None:
        keep, held = stratified_holdout(train.labels, cfg.data.test_split, TEST_SEED)
        train, test = train.take(keep), train.take(held)
    if cfg.data.folds:
        keep, held = stratified_fold(train.labels, cfg.data.folds, cfg.data.fold, cfg.train.seed)
        train, val = train.take(keep), train.take(held)
    elif "test" in found and "val" in found:
        val = found["val"]
    elif cfg.data.val_split > 0:
        keep, held = stratified_holdout(train.labels, cfg.data.val_split, cfg.train.seed)
        train, val = train.take(keep), train.take(held)
    else:
        return train, test, test, True
    return train, val, test, False


def _mean_std(split: Split, files_transform=None, limit: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in [0, 1] of the training images (a sample of files when streaming)."""
    if split.images is not None:
        total = torch.zeros(split.images.shape[1], dtype=torch.float64)
        sq = torch.zeros_like(total)
        for chunk in split.images.split(4096):
            c = chunk.double() / 255
            total += c.sum((0, 2, 3))
            sq += (c * c).sum((0, 2, 3))
        n = split.images.shape[0] * split.images.shape[2] * split.images.shape[3]
    else:
        ds = ImageFiles(list(zip(split.files[:limit], split.labels[:limit].tolist())), *files_transform)
        stacked = torch.stack([ds[i][0] for i in range(len(ds))]).double()
        total, sq, n = stacked.sum((0, 2, 3)), (stacked * stacked).sum((0, 2, 3)), stacked[:, 0].numel()
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(max(v, 1e-3), 6) for v in std.tolist()]


def build_data(cfg: Config, device: torch.device, norm: tuple[list[float], list[float]] | None = None) -> DataBundle:
    """Resolve, decode or stream, split, subset and wrap the data described by `cfg.data`.

    `norm` (mean, std) replaces the statistics computed from the training split, e.g. an artifact's own.
    """
    name = str(cfg.data.path).lower()
    cache_root = Path(cfg.data.root) / "cache"
    if name in sources.NAMED:
        found, classes, channels = load_named(name, cfg.data.root, cfg.data.channels)
        native, skipped, mode = found["train"].images.shape[-1], [], "tensor"
    else:
        found, classes, channels, native, skipped, mode = load_files(cfg, cache_root)
    train, val, test, val_is_test = _assign_splits(found, cfg)
    if cfg.data.subset:
        # the test sample stays the same for every seed, so runs that differ only in their seed are comparable
        train, val, test = (s.take(stratified_subset(s.labels, cfg.data.subset, seed))
                            for s, seed in ((train, cfg.train.seed), (val, cfg.train.seed), (test, TEST_SEED)))
        val = test if val_is_test else val
    if len(torch.unique(train.labels)) < 2:
        raise UsageError(f"{cfg.data.path}: training split has fewer than 2 classes with readable images")
    img_size = cfg.data.img_size or native or 224
    common = dict(device=device, channels_last=cfg.train.channels_last, num_classes=len(classes))
    if mode == "tensor":
        mean, std = norm or _mean_std(train)
        make = lambda s, bs, is_train: TensorLoader(  # noqa: E731
            s.images, s.labels, bs, train=is_train, aug=cfg.aug, mean=mean, std=std, img_size=img_size,
            seed=cfg.train.seed, names=s.names, **common)
    else:
        from torchvision.transforms import v2
        probe_tf = v2.Compose([v2.ToImage(), v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size),
                               v2.ToDtype(torch.float32, scale=True)])
        mean, std = norm or _mean_std(train, (channels, probe_tf))
        make = lambda s, bs, is_train: StreamLoader(  # noqa: E731
            ImageFiles(list(zip(s.files, s.labels.tolist())), channels,
                       stream_transforms(cfg.aug, img_size, channels, mean, std, is_train)),
            bs, train=is_train, aug=cfg.aug, workers=cfg.data.workers, seed=cfg.train.seed, **common)
    bs, ebs = cfg.train.batch_size, cfg.train.eval_batch_size
    return DataBundle(train=make(train, bs, True), val=make(val, ebs, False), test=make(test, ebs, False),
                      classes=classes, mean=mean, std=std, channels=channels, img_size=img_size,
                      source=str(cfg.data.path), skipped=skipped, val_is_test=val_is_test)
