"""Per-image augmentation policies drawn for a whole batch at once, then applied op by op.

torchvision's AutoAugment, RandAugment, TrivialAugmentWide, RandomRotation, RandomAffine, GaussianBlur and
RandomErasing each draw one op and magnitude per call, so a batch costs one Python call per image. Here every image
still draws its own (from the same distributions: the op tables are read from torchvision's own classes), but the
draws for the whole batch are made at once from the loader's seeded generator, and the images that drew the same op
are transformed together by `batch_ops`. `aug.batched=false` keeps torchvision's per-image path as the reference.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from cnnmode.config import AugConfig
from cnnmode.data.batch_ops import GEOMETRIC, OP_NAMES, OPS, erase, geometric

IDENTITY = OP_NAMES.index("Identity")
# an op's index in OP_NAMES → its index in GEOMETRIC, or -1
_GEOMETRY_KIND = torch.tensor([GEOMETRIC.index(n) if n in GEOMETRIC else -1 for n in OP_NAMES])


@dataclass
class Slot:
    """One step of a policy for a batch: the op each image drew (an index into OP_NAMES) and its parameters
    (n, 3): the magnitude first; Affine uses (shift x, shift y, scale)."""
    op: torch.Tensor
    params: torch.Tensor

    def names(self) -> list[str]:
        """The op name each image drew."""
        return [OP_NAMES[i] for i in self.op.tolist()]


def _slot(op: torch.Tensor, first: torch.Tensor, *rest: torch.Tensor) -> Slot:
    cols = [first, *rest] + [torch.zeros_like(first)] * (2 - len(rest))
    return Slot(op.long(), torch.stack(cols, 1).float())


def _signed(mag: torch.Tensor, signed: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = signed & (torch.rand(len(mag), generator=gen) <= 0.5)
    return torch.where(flip, -mag, mag)


@functools.lru_cache(maxsize=32)
def _space(kind: str, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's augmentation space for `kind` as tensors: op index, magnitudes (ops × bins; 0 where an op
    has none), signed."""
    tv = _TORCHVISION[kind]()
    bins = getattr(tv, "num_magnitude_bins", 10)
    ops, mags, signed = [], [], []
    for name, (magnitudes, is_signed) in tv._AUGMENTATION_SPACE.items():
        values = magnitudes(bins, h, w)
        ops.append(OP_NAMES.index(name))
        mags.append(torch.zeros(bins) if values is None else values.float())
        signed.append(bool(is_signed))
    return torch.tensor(ops), torch.stack(mags), torch.tensor(signed)


_TORCHVISION = {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), "randaugment": v2.RandAugment,
                "trivialaugment": v2.TrivialAugmentWide}


@functools.lru_cache(maxsize=32)
def _subpolicies(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AutoAugment's CIFAR10 sub-policies as (sub-policies × 2) tensors: op, probability, magnitude, signed."""
    ops, mags, signed = _space("autoaugment", h, w)
    row = {OP_NAMES[int(o)]: i for i, o in enumerate(ops)}
    steps = [[(row[name], p, idx) for name, p, idx in pair] for pair in _TORCHVISION["autoaugment"]()._policies]
    r = torch.tensor([[s[0] for s in pair] for pair in steps])
    prob = torch.tensor([[s[1] for s in pair] for pair in steps])
    mag = torch.tensor([[0.0 if s[2] is None else float(mags[s[0], s[2]]) for s in pair] for pair in steps])
    return ops[r], prob, mag, signed[r]


def autoaugment(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
    """AutoAugment (CIFAR10 policy): each image picks one of the sub-policies; each of its two ops applies with
    its probability, at its fixed magnitude, with a random sign where the op is signed."""
    ops, prob, mag, signed = _subpolicies(h, w)
    pick = torch.randint(len(ops), (n,), generator=gen)
    slots = []
    for step in range(2):
        applies = torch.rand(n, generator=gen) <= prob[pick, step]
        m = torch.where(applies, _signed(mag[pick, step], signed[pick, step], gen), 0.0)
        slots.append(_slot(torch.where(applies, ops[pick, step], IDENTITY), m))
    return slots


def randaugment(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
    """RandAugment (torchvision's defaults: 2 ops, magnitude 9 of 31): each image draws its ops uniformly."""
    tv = v2.RandAugment()
    ops, mags, signed = _space("randaugment", h, w)
    slots = []
    for _ in range(tv.num_ops):
        r = torch.randint(len(ops), (n,), generator=gen)
        slots.append(_slot(ops[r], _signed(mags[r, tv.magnitude], signed[r], gen)))
    return slots


def trivialaugment(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
    """TrivialAugmentWide: one op per image, uniformly, at a uniformly drawn magnitude bin."""
    ops, mags, signed = _space("trivialaugment", h, w)
    r = torch.randint(len(ops), (n,), generator=gen)
    level = torch.randint(mags.shape[1], (n,), generator=gen)
    return [_slot(ops[r], _signed(mags[r, level], signed[r], gen))]


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def rotation(degrees: float) -> callable:
    """RandomRotation(degrees): an angle uniform in ±degrees per image."""
    def draw(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        return [_slot(torch.full((n,), OP_NAMES.index("Rotate")), _uniform(n, -degrees, degrees, gen))]
    return draw


def affine(fraction: float) -> callable:
    """RandomAffine(0, translate=(f, f), scale=(1 - f, 1 + f)): whole-pixel shifts and a scale per image."""
    def draw(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        tx = _uniform(n, -fraction * w, fraction * w, gen).round()
        ty = _uniform(n, -fraction * h, fraction * h, gen).round()
        scale = _uniform(n, 1 - fraction, 1 + fraction, gen)
        return [_slot(torch.full((n,), OP_NAMES.index("Affine")), tx, ty, scale)]
    return draw


def blur(probability: float) -> callable:
    """RandomApply(GaussianBlur(3, (0.1, 2.0)), p): a sigma per image, applied to a `probability` share."""
    def draw(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        applies = torch.rand(n, generator=gen) < probability
        sigma = _uniform(n, 0.1, 2.0, gen)
        return [_slot(torch.where(applies, OP_NAMES.index("Blur"), IDENTITY), torch.where(applies, sigma, 0.0))]
    return draw


def erasing_boxes(n: int, h: int, w: int, probability: float, gen: torch.Generator) -> torch.Tensor:
    """RandomErasing(p) boxes (top, left, height, width) per image: an area share in [0.02, 0.33] and an aspect
    ratio log-uniform in [0.3, 3.3], the first of 10 tries that fits; height 0 where nothing is erased."""
    tries = 10
    area = h * w * _uniform(n * tries, 0.02, 0.33, gen).view(n, tries)
    aspect = torch.exp(_uniform(n * tries, math.log(0.3), math.log(3.3), gen)).view(n, tries)
    hh, ww = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (hh < h) & (ww < w)
    first = fits.float().argmax(1, keepdim=True)
    hh, ww = hh.gather(1, first)[:, 0], ww.gather(1, first)[:, 0]
    applies = (torch.rand(n, generator=gen) < probability) & fits.any(1)
    top = (torch.rand(n, generator=gen, dtype=torch.float64) * (h - hh + 1)).floor()
    left = (torch.rand(n, generator=gen, dtype=torch.float64) * (w - ww + 1)).floor()
    return torch.stack([top, left, torch.where(applies, hh, 0.0), ww], 1).long()


class BatchPolicy:
    """The per-image policies an `AugConfig` asks for, in torchvision's order (rotation, affine, blur, then
    AutoAugment, RandAugment, TrivialAugment), drawn per image and applied to uint8 batches on their device."""

    def __init__(self, aug: AugConfig) -> None:
        self.draws = []
        if aug.rotation > 0:
            self.draws.append(rotation(aug.rotation))
        if aug.affine > 0:
            self.draws.append(affine(aug.affine))
        if aug.blur > 0:
            self.draws.append(blur(aug.blur))
        for on, draw in ((aug.autoaugment, autoaugment), (aug.randaugment, randaugment),
                         (aug.trivialaugment, trivialaugment)):
            if on:
                self.draws.append(draw)

    def __bool__(self) -> bool:
        return bool(self.draws)

    def plan(self, n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        """Every image's ops and parameters for a batch of n h×w images, in the order they apply."""
        return [slot for draw in self.draws for slot in draw(n, h, w, gen)]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment a uint8 (N, C, H, W) batch; each image follows its own draws."""
        return apply_plan(x, self.plan(x.shape[0], x.shape[-2], x.shape[-1], gen))


def apply_plan(x: torch.Tensor, slots: list[Slot]) -> torch.Tensor:
    """Run the slots in order; within a slot, the images that drew the same op go through it together."""
    x = x.clone()
    for slot in slots:
        kinds = _GEOMETRY_KIND[slot.op]
        if (kinds >= 0).any():  # every geometric op of the slot in one resampling
            rows = (kinds >= 0).nonzero()[:, 0]
            picked = rows.to(x.device)
            x[picked] = geometric(x[picked], kinds[rows], slot.params[rows])
        for op in slot.op[kinds < 0].unique().tolist():
            if op == IDENTITY:
                continue
            rows = (slot.op == op).nonzero()[:, 0]
            picked = rows.to(x.device)
            x[picked] = OPS[OP_NAMES[op]](x[picked], slot.params[rows])
    return x


def random_erasing(x: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """RandomErasing(p) on a (normalised) batch: each image's own box set to 0."""
    return erase(x, erasing_boxes(x.shape[0], x.shape[-2], x.shape[-1], probability, gen))
