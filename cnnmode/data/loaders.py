"""Loaders: one object per split with `__iter__`/`__len__`/`set_epoch`, yielding normalised batches on the device."""
from __future__ import annotations

import copy
import math
import warnings
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from cnnmode.config import AugConfig
from cnnmode.data import augment
from cnnmode.data.batch_policies import BatchPolicy, random_erasing
from cnnmode.data.decode import pil_to_mode
from cnnmode.data.labels import sample_weights
from cnnmode.machine import usable_cores


POLICY_CHUNK = 256  # images per run of the batched policies: their cost is mostly per op, not per image
DEVICE_SHARE = 0.4  # the most of a GPU's free memory one in-memory split may take (the rest: model, activations)


def fits_on_device(nbytes: int, free: int, share: float = DEVICE_SHARE) -> bool:
    """Whether a split of `nbytes` may live on a device with `free` bytes free."""
    return nbytes <= share * free


def place_split(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Where a split's uint8 images live while training on `device`: on a CUDA device once, when they fit
    (`fits_on_device`), so indexing and augmentation never copy them; else in pinned host memory, copied batch
    by batch without blocking. Other devices keep them where they are."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    return images.to(device) if fits_on_device(images.nbytes, free) else images.pin_memory()


def _per_channel(values: list[float], device: torch.device) -> torch.Tensor:
    """Mean or std in [0, 1] per channel → (1, C, 1, 1) on the 0-255 scale of uint8 pixels."""
    return torch.tensor(values, device=device).view(1, -1, 1, 1) * 255


def _finish(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class EpochLoader:
    """What both loaders share: labels, batch size, per-(seed, epoch) reproducible randomness, this process's
    shard of every epoch under data-parallel training, and the position inside an epoch (for mid-epoch resume)."""

    labels: torch.Tensor
    batch_size: int  # training: the global batch, split among the ranks
    train: bool
    seed: int
    epoch: int = 0
    balanced: bool = False  # draw each class equally often (with replacement) instead of a shuffle
    rank: int = 0
    world: int = 1
    position: int = 0  # batches of the current pass yielded so far
    resume_at: int = 0  # where the next pass starts (set by `resume`, used once)
    resume_gen: torch.Tensor | None = None  # the augmentation generator's state at `resume_at`
    _gen: torch.Generator | None = None

    def sharded(self, rank: int, world: int) -> "EpochLoader":
        """A copy that yields rank `rank`'s part of each batch (training: a contiguous slice of every global
        batch, so the ranks together see the single-process order; evaluation: every `world`-th image)."""
        part = copy.copy(self)
        part.rank, part.world = rank, world
        return part

    def epoch_order(self, gen: torch.Generator) -> torch.Tensor:
        """This epoch's training order: a permutation, or with `balanced` a class-balanced draw of the same
        length, each sample weighted by 1 / its class count."""
        n = len(self.labels)
        if not self.balanced:
            return torch.randperm(n, generator=gen)
        return torch.multinomial(sample_weights(self.labels), n, replacement=True, generator=gen)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation to produce (from its start)."""
        self.epoch, self.resume_at, self.resume_gen = epoch, 0, None

    def generator(self) -> torch.Generator:
        """This epoch's random generator (the shuffle is drawn from it first, the same on every rank)."""
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def augment_generator(self, gen: torch.Generator) -> torch.Generator:
        """After the shuffle: the generator this rank augments with (rank 0 goes on with the shared one, as a
        single process does; the others get their own)."""
        if self.rank == 0:
            return gen
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7_919 * self.rank)

    def policy_generator(self, batch: int) -> torch.Generator:
        """The generator the batched per-image policies draw from for the chunk or batch starting at `batch`:
        seeded by (seed, epoch, rank, batch) only, so a resumed epoch redraws any batch alike."""
        return torch.Generator().manual_seed(
            ((self.seed * 100_003 + self.epoch) * 1_009 + self.rank) * 1_000_003 + batch)

    def index_batches(self, order: torch.Tensor) -> list[torch.Tensor]:
        """This rank's index batches for the epoch, from `order` (all of them, from the first)."""
        if not self.train:
            return list(order[self.rank::self.world].split(self.batch_size))
        size = self.batch_size
        return [order[i * size:(i + 1) * size].tensor_split(self.world)[self.rank] for i in range(len(self))]

    def state_dict(self) -> dict:
        """Where this epoch stands: (epoch, batches yielded, the augmentation generator's state)."""
        gen = None if self._gen is None else self._gen.get_state()
        return {"epoch": self.epoch, "position": self.position, "gen": gen}

    def resume(self, state: dict) -> None:
        """Continue state["epoch"] after state["position"] batches (set after `set_epoch`)."""
        self.epoch, self.resume_at, self.resume_gen = state["epoch"], state["position"], state.get("gen")

    def _begin(self) -> int:
        """Start a pass: the batch to start from (0, or once after `resume` its position)."""
        start, self.resume_at = self.resume_at, 0
        self.position = start
        return start

    def __len__(self) -> int:
        n = len(self.labels)
        if not self.train:
            return math.ceil(len(range(self.rank, n, self.world)) / self.batch_size)
        return n // self.batch_size if n >= self.batch_size else math.ceil(n / self.batch_size)


class TensorLoader(EpochLoader):
    """A whole split in memory as uint8 (N, C, H, W); shuffling and augmentation run on whole batches.

    Randomness comes from a generator seeded by (seed, epoch), so any epoch can be replayed exactly.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool,
                 aug: AugConfig, mean: list[float], std: list[float], img_size: int, device: torch.device,
                 channels_last: bool = True, seed: int = 0, num_classes: int = 0,
                 names: list[str] | None = None, balanced: bool = False) -> None:
        self.images, self.labels = place_split(images, device), labels
        self.names, self.balanced = names, balanced
        self.batch_size, self.train, self.aug = batch_size, train, aug
        self.img_size, self.device, self.channels_last, self.seed = img_size, device, channels_last, seed
        self.mean, self.std = _per_channel(mean, device), _per_channel(std, device)
        self.batch_policy = BatchPolicy(aug) if train and aug.batched else None
        self.policy = augment.sample_policy(aug) if train and not aug.batched else None
        self.mix = augment.batch_mix(aug, num_classes) if train else None
        self._chunk: tuple | None = None  # ((epoch, rank, world, first batch), its batches, policies applied)

    def __iter__(self):
        gen = self.generator()
        order = self.epoch_order(gen) if self.train else torch.arange(len(self.labels))
        flips = None
        if self.train and self.aug.flip and self.aug.alternate_flip:
            flips = augment.alternating_flips(len(self.labels), self.seed, self.epoch)
        gen = self.augment_generator(gen)
        start, self._gen = self._begin(), gen
        if start and self.resume_gen is not None:
            gen.set_state(self.resume_gen)
        self.resume_gen = None
        batches = self.index_batches(order)
        for i in range(start, len(batches)):
            idx = batches[i]
            x = self.policy_chunk(batches, i) if self.batch_policy else self.take(idx)
            y = self.labels[idx].to(self.device, non_blocking=True)
            batch = self.prepare(x, y, gen, None if flips is None else flips[idx])
            self.position += 1
            yield batch

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `idx`, on the training device (indexed there when the split lives there)."""
        return self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)

    def policy_chunk(self, batches: list[torch.Tensor], i: int) -> torch.Tensor:
        """Batch i with the per-image policies applied. They run over chunks of about POLICY_CHUNK images (whole
        batches), drawn from a generator of their own seeded by (seed, epoch, rank, chunk), so any batch is
        reproduced from the chunk it belongs to, as a resumed epoch needs."""
        per_chunk = max(1, POLICY_CHUNK // max(1, len(batches[0])))
        first = i - i % per_chunk
        key = (self.epoch, self.rank, self.world, first)
        if self._chunk is None or self._chunk[0] != key:
            members = batches[first:first + per_chunk]
            x = self.batch_policy(self.take(torch.cat(members)), self.policy_generator(first))
            self._chunk = (key, x.split([len(b) for b in members]))
        return self._chunk[1][i - first]

    def prepare(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                flips: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch → augmented, resized, normalised float batch (`flips`: which to mirror, else random). The
        batched per-image policies have run already (`policy_chunk`); torchvision's per-image path runs here."""
        if self.policy is not None:
            x = augment.apply_per_image(x, self.policy)
        x = x.float()
        if self.img_size and x.shape[-1] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.img_size)
        if self.train:
            x = augment.batch_color(x, self.aug.color_jitter, self.aug.grayscale, gen)
            if self.aug.flip:
                x = augment.batch_flip(x, gen, flips)
            x = augment.batch_crop(x, self.aug.crop_padding, gen)
        x = (x - self.mean) / self.std
        if self.train:
            x = augment.batch_cutout(x, self.aug.cutout, gen)
            if self.aug.random_erasing > 0 and self.aug.batched:
                x = random_erasing(x, self.aug.random_erasing, gen)
            elif self.aug.random_erasing > 0:
                from torchvision.transforms import v2
                x = augment.apply_per_image(x, v2.RandomErasing(p=self.aug.random_erasing))
            if self.mix is not None:
                x, y = self.mix(x, y)
        return _finish(x, self.channels_last), y


def _decode_jpeg(path: Path, channels: int) -> torch.Tensor:
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec, which needs FFmpeg's libraries
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        return decode_jpeg(read_file(str(path)), mode=mode, apply_exif_orientation=True)


def _label(y: int | list[int]) -> int | torch.Tensor:
    """A class index as it is; a multi-hot row (a list) as a uint8 tensor, so that batches collate to (B, C)."""
    return torch.tensor(y, dtype=torch.uint8) if isinstance(y, list) else y


class ImageFiles(torch.utils.data.Dataset):
    """Image files on disk → (transformed image, label); for images too large to keep in memory. JPEGs are decoded
    by torchvision (libjpeg-turbo, EXIF orientation applied), other formats and anything it refuses by PIL.

    An item is an index, or (index, seed) while training: the image's augmentation then depends on (seed, index)
    only, not on the worker that loads it or on where in the epoch a resumed run starts."""

    def __init__(self, items: list[tuple[Path, int]], channels: int, transform) -> None:
        self.items, self.channels, self.transform = items, channels, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]):
        i, seed = item if isinstance(item, tuple) else (item, None)
        path, label = self.items[i]
        label = _label(label)
        image = self.decode(Path(path))
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + i)
            return self.transform(image), label

    def decode(self, path: Path):
        """uint8 (C, H, W) for a JPEG, else a PIL image in the split's mode."""
        if path.suffix.lower() in (".jpg", ".jpeg"):
            try:
                return _decode_jpeg(path, self.channels)
            except RuntimeError:  # a JPEG libjpeg-turbo refuses (e.g. damaged): PIL reads what it can
                pass
        with Image.open(path) as img:
            return pil_to_mode(img, self.channels)


def stream_workers(asked: int) -> int:
    """DataLoader worker processes: `asked`, or for -1 one per core this process may use (at most 8)."""
    return asked if asked >= 0 else max(1, min(8, usable_cores()))


class _EpochBatches:
    """The batch sampler of a persistent DataLoader: each pass yields the loader's current epoch from where it
    stands, as (index, seed) items while training."""

    def __init__(self, loader: "StreamLoader") -> None:
        # weakly: a cycle between the two would leave the workers' shutdown to the garbage collector, which
        # tears down their queues first and then waits 5 s per worker for an exit that never comes
        self.loader = weakref.ref(loader)

    def __iter__(self):
        yield from self.loader().current_batches

    def __len__(self) -> int:
        return len(self.loader().current_batches)


class StreamLoader(EpochLoader):
    """A DataLoader over image files; same interface as TensorLoader. Its workers stay up across epochs and read
    ahead; with `device_side`, they hand over uint8 crops and the per-image policies, normalisation and random
    erasing run batch-wise on the training device."""

    def __init__(self, dataset: ImageFiles, batch_size: int, *, train: bool, aug: AugConfig, device: torch.device,
                 workers: int, channels_last: bool = True, seed: int = 0, num_classes: int = 0,
                 balanced: bool = False, mean: list[float] | None = None, std: list[float] | None = None,
                 device_side: bool = False) -> None:
        self.dataset, self.batch_size, self.train, self.balanced = dataset, batch_size, train, balanced
        self.device, self.workers, self.channels_last, self.seed = device, stream_workers(workers), channels_last, seed
        self.mix = augment.batch_mix(aug, num_classes) if train else None
        ys = [y for _, y in dataset.items]
        self.labels = torch.tensor(ys, dtype=torch.uint8 if ys and isinstance(ys[0], list) else torch.long)
        self.names = [str(p) for p, _ in dataset.items]
        self.device_side, self.aug = device_side and train, aug
        self.batch_policy = BatchPolicy(aug) if self.device_side else None
        if self.device_side:
            self.mean, self.std = _per_channel(mean, device), _per_channel(std, device)
        self.current_batches: list[list] = []
        self._loader: torch.utils.data.DataLoader | None = None

    def sharded(self, rank: int, world: int) -> "StreamLoader":
        part = super().sharded(rank, world)
        part._loader = None  # its own DataLoader, whose batches are its own shard
        return part

    def data_loader(self) -> torch.utils.data.DataLoader:
        """The one DataLoader, made on first use: persistent workers, read-ahead, pinned memory on a GPU."""
        if self._loader is None:
            ahead = dict(persistent_workers=True, prefetch_factor=4) if self.workers else {}
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=_EpochBatches(self), num_workers=self.workers,
                pin_memory=self.device.type == "cuda", **ahead)
        return self._loader

    def __iter__(self):
        gen = self.generator()
        order = self.epoch_order(gen) if self.train else torch.arange(len(self.labels))
        seed = self.seed * 100_003 + self.epoch
        start, self._gen = self._begin(), self.augment_generator(gen)  # mixing draws from the global RNG
        batches = self.index_batches(order)
        self.current_batches = [[(i, seed) if self.train else i for i in b.tolist()] for b in batches[start:]]
        for n, (x, y) in enumerate(self.data_loader(), start):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.device_side:
                x = self.on_device(x, n)
            if self.mix is not None:
                x, y = self.mix(x, y)
            self.position += 1
            yield _finish(x, self.channels_last), y

    def on_device(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Batch n's uint8 crops → per-image policies (batched, drawn per (seed, epoch, rank, batch)) →
        normalised floats → random erasing."""
        gen = self.policy_generator(n)
        if self.batch_policy:
            x = self.batch_policy(x, gen)
        x = (x.float() - self.mean) / self.std
        if self.aug.random_erasing > 0:
            x = random_erasing(x, self.aug.random_erasing, gen)
        return x
