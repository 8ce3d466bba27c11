"""`build_data`: resolve `data.path` into train/val/test loaders, the class names and the normalisation."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnmode.config import Config
from cnnmode.data import csvlist, source_layout
from cnnmode.data.augment import stream_transforms
from cnnmode.data.loaders import ImageFiles, StreamLoader, TensorLoader
from cnnmode.data.read_splits import Split, load_files, load_named
from cnnmode.data.labels import counts as label_counts
from cnnmode.data.holdouts import stratified_fold, stratified_holdout, stratified_subset
from cnnmode.errors import UsageError

TEST_SEED = 20_260_101  # the carved test split must not move with train.seed
CALIB_IMAGES = 5000  # training images the temperature is fitted on with data.calib_split=0
REFERENCE_IMAGES = 5000  # training images, seen as at test time, that the unknown-image index is built from


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
    calib: TensorLoader | StreamLoader | None = None  # held-out images to fit the temperature on (never test)
    reference: TensorLoader | StreamLoader | None = None  # training images without augmentation (the embedding index)

    @property
    def multilabel(self) -> bool:
        """True for label sets (multi-hot labels, sigmoid outputs)."""
        return self.train.labels.ndim == 2

    def sizes(self) -> dict[str, int]:
        """Images per split."""
        return {k: len(getattr(self, k).labels) for k in ("train", "val", "test")}


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


def _carve_calib(train: Split, fraction: float) -> tuple[Split, Split]:
    """(train, calib): without a validation split, `fraction` of train is held out to fit the temperature on;
    with fraction 0 (or too few images to spare) the temperature is fitted on training images."""
    if fraction > 0 and len(train.labels) * fraction >= 2 * int((label_counts(train.labels, 0) > 0).sum()):
        keep, held = stratified_holdout(train.labels, fraction, TEST_SEED)
        return train.take(keep), train.take(held)
    return train, train.take(stratified_subset(train.labels, CALIB_IMAGES, TEST_SEED))


def _check_classes(source: str, classes: list[str], train: Split, test: Split) -> None:
    """Every class needs readable training images (a class whose files are all unreadable must not train as a
    dead class), and there must be test images to score the run on."""
    counts = label_counts(train.labels, len(classes)).tolist()
    dead = [c for c, n in zip(classes, counts) if n == 0]
    if dead:
        where = "label(s)" if train.labels.ndim == 2 else "class folder(s)"
        raise UsageError(f"{source}: {where} with no readable training images: {', '.join(dead)} "
                         f"(classes: {', '.join(classes)}); add images or remove the folder")
    if len(test) == 0:
        single = [c for c, n in zip(classes, counts) if n < 2]
        raise UsageError(f"{source}: no test images; without a test/ folder every class needs at least 2 images "
                         f"(one is held out to test on); too few in: {', '.join(single) or 'all'}")


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
    if cfg.data.task == "multilabel" and not csvlist.is_list(name):
        raise UsageError(f"data.task=multilabel needs label sets: give a .csv list of path,labels[,split] rows "
                         f"(names separated by ;), not {cfg.data.path}")
    cache_root = Path(cfg.data.root) / "cache"
    found = (load_named(name, cfg.data.root, cfg.data.channels) if name in source_layout.NAMED
             else load_files(cfg, cache_root))
    classes, channels = found.classes, found.channels
    train, val, test, val_is_test = _assign_splits(found.splits, cfg)
    _check_classes(str(cfg.data.path), classes, train, test)
    calib = _carve_calib(train, cfg.data.calib_split) if val_is_test else None
    if calib is not None:
        train, calib = calib
    if cfg.data.subset:
        # the test sample stays the same for every seed, so runs that differ only in their seed are comparable
        train, val, test = (s.take(stratified_subset(s.labels, cfg.data.subset, seed))
                            for s, seed in ((train, cfg.train.seed), (val, cfg.train.seed), (test, TEST_SEED)))
        val = test if val_is_test else val
        calib = calib.take(stratified_subset(calib.labels, cfg.data.subset, TEST_SEED)) if calib is not None else None
    if int((label_counts(train.labels, len(classes)) > 0).sum()) < 2:
        raise UsageError(f"{cfg.data.path}: training split has fewer than 2 classes with readable images")
    img_size = cfg.data.img_size or found.native_size or 224
    common = dict(device=device, channels_last=cfg.train.channels_last, num_classes=len(classes))
    balanced = cfg.data.sampler == "balanced"
    if found.mode == "tensor":
        mean, std = norm or _mean_std(train)
        make = lambda s, bs, is_train: TensorLoader(  # noqa: E731
            s.images, s.labels, bs, train=is_train, aug=cfg.aug, mean=mean, std=std, img_size=img_size,
            seed=cfg.train.seed, names=s.names, balanced=is_train and balanced, **common)
    else:
        from torchvision.transforms import v2
        probe_tf = v2.Compose([v2.ToImage(), v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size),
                               v2.ToDtype(torch.float32, scale=True)])
        mean, std = norm or _mean_std(train, (channels, probe_tf))
        make = lambda s, bs, is_train: StreamLoader(  # noqa: E731
            ImageFiles(list(zip(s.files, s.labels.tolist())), channels,
                       stream_transforms(cfg.aug, img_size, channels, mean, std, is_train,
                                         device_side=is_train and cfg.aug.batched)),
            bs, train=is_train, aug=cfg.aug, workers=cfg.data.workers, seed=cfg.train.seed,
            balanced=is_train and balanced, mean=mean, std=std, device_side=cfg.aug.batched, **common)
    bs, ebs = cfg.train.batch_size, cfg.train.eval_batch_size
    val_loader = make(val, ebs, False)
    calib_loader = make(calib, ebs, False) if calib is not None else val_loader
    reference = make(train.take(stratified_subset(train.labels, REFERENCE_IMAGES, TEST_SEED)), ebs, False)
    return DataBundle(train=make(train, bs, True), val=val_loader, test=make(test, ebs, False),
                      classes=classes, mean=mean, std=std, channels=channels, img_size=img_size,
                      source=str(cfg.data.path), skipped=found.skipped, val_is_test=val_is_test, calib=calib_loader,
                      reference=reference)
