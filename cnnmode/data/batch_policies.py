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

import numpy as np
import torch
from torchvision.transforms import v2

from cnnmode.config import AugConfig
from cnnmode.data.batch_ops import GEOMETRIC, LUTS, OP_NAMES, OPS, TABLE_OPS, TABLES, erase, geometric, look_up

IDENTITY = OP_NAMES.index("Identity")
# an op's index in OP_NAMES → its index in GEOMETRIC, or -1
_GEOMETRY_KIND = np.array([GEOMETRIC.index(n) if n in GEOMETRIC else -1 for n in OP_NAMES])
_GEOMETRIC_OPS = {OP_NAMES.index(n) for n in GEOMETRIC}
_TABLE_OPS = {OP_NAMES.index(n) for n in TABLE_OPS}
_IS_TABLE = np.array([n in TABLE_OPS for n in OP_NAMES])


@dataclass
class Slot:
    """One step of a policy for a batch: the op each image drew (n,: an index into OP_NAMES) and its parameters
    (n, 3) float32: the magnitude first; Affine uses (shift x, shift y, scale)."""
    op: np.ndarray
    params: np.ndarray

    def names(self) -> list[str]:
        """The op name each image drew."""
        return [OP_NAMES[i] for i in np.asarray(self.op).tolist()]


def _slot(op: np.ndarray, first: np.ndarray, *rest: np.ndarray) -> Slot:
    cols = [first, *rest] + [np.zeros_like(first)] * (2 - len(rest))
    return Slot(np.asarray(op, dtype=np.int64), np.stack(cols, 1).astype(np.float32))


def _uniforms(n: int, k: int, gen: torch.Generator) -> np.ndarray:
    """(k, n) uniforms in [0, 1) from the loader's generator: every draw of a batch in one call (the rest of the
    drawing is NumPy arithmetic on them, far cheaper than a tensor call per draw)."""
    return torch.rand(k, n, generator=gen, dtype=torch.float64).numpy()


def _pick(u: np.ndarray, count: int) -> np.ndarray:
    """Uniform integers in [0, count) from uniforms."""
    return np.minimum((u * count).astype(np.int64), count - 1)


def _signed(mag: np.ndarray, signed: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.where(signed & (u <= 0.5), -mag, mag)


@functools.lru_cache(maxsize=32)
def _space(kind: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torchvision's augmentation space for `kind` as arrays: op index, magnitudes (ops × bins; 0 where an op
    has none), signed."""
    tv = _TORCHVISION[kind]()
    bins = getattr(tv, "num_magnitude_bins", 10)
    ops, mags, signed = [], [], []
    for name, (magnitudes, is_signed) in tv._AUGMENTATION_SPACE.items():
        values = magnitudes(bins, h, w)
        ops.append(OP_NAMES.index(name))
        mags.append(np.zeros(bins, np.float32) if values is None else values.float().numpy())
        signed.append(bool(is_signed))
    return np.array(ops), np.stack(mags), np.array(signed)


_TORCHVISION = {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), "randaugment": v2.RandAugment,
                "trivialaugment": v2.TrivialAugmentWide}


@functools.lru_cache(maxsize=32)
def _subpolicies(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AutoAugment's CIFAR10 sub-policies as (sub-policies × 2) arrays: op, probability, magnitude, signed."""
    ops, mags, signed = _space("autoaugment", h, w)
    row = {OP_NAMES[int(o)]: i for i, o in enumerate(ops)}
    steps = [[(row[name], p, idx) for name, p, idx in pair] for pair in _TORCHVISION["autoaugment"]()._policies]
    r = np.array([[s[0] for s in pair] for pair in steps])
    prob = np.array([[s[1] for s in pair] for pair in steps])
    mag = np.array([[0.0 if s[2] is None else float(mags[s[0], s[2]]) for s in pair] for pair in steps],
                   dtype=np.float32)
    return ops[r], prob, mag, signed[r]


def autoaugment(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
    """AutoAugment (CIFAR10 policy): each image picks one of the sub-policies; each of its two ops applies with
    its probability, at its fixed magnitude, with a random sign where the op is signed."""
    ops, prob, mag, signed = _subpolicies(h, w)
    u = _uniforms(n, 5, gen)
    pick = _pick(u[0], len(ops))
    slots = []
    for step in range(2):
        applies = u[1 + 2 * step] <= prob[pick, step]
        m = np.where(applies, _signed(mag[pick, step], signed[pick, step], u[2 + 2 * step]), 0.0)
        slots.append(_slot(np.where(applies, ops[pick, step], IDENTITY), m))
    return slots


def randaugment(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
    """RandAugment (torchvision's defaults: 2 ops, magnitude 9 of 31): each image draws its ops uniformly."""
    tv = v2.RandAugment()
    ops, mags, signed = _space("randaugment", h, w)
    u = _uniforms(n, 2 * tv.num_ops, gen)
    slots = []
    for i in range(tv.num_ops):
        r = _pick(u[2 * i], len(ops))
        slots.append(_slot(ops[r], _signed(mags[r, tv.magnitude], signed[r], u[2 * i + 1])))
    return slots


def trivialaugment(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
    """TrivialAugmentWide: one op per image, uniformly, at a uniformly drawn magnitude bin."""
    ops, mags, signed = _space("trivialaugment", h, w)
    u = _uniforms(n, 3, gen)
    r, level = _pick(u[0], len(ops)), _pick(u[1], mags.shape[1])
    return [_slot(ops[r], _signed(mags[r, level], signed[r], u[2]))]


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> np.ndarray:
    return low + (high - low) * _uniforms(n, 1, gen)[0]


def rotation(degrees: float) -> callable:
    """RandomRotation(degrees): an angle uniform in ±degrees per image."""
    def draw(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        return [_slot(np.full(n, OP_NAMES.index("Rotate")), _uniform(n, -degrees, degrees, gen))]
    return draw


def affine(fraction: float) -> callable:
    """RandomAffine(0, translate=(f, f), scale=(1 - f, 1 + f)): whole-pixel shifts and a scale per image."""
    def draw(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        u = _uniforms(n, 3, gen)
        tx = np.round(fraction * w * (2 * u[0] - 1))
        ty = np.round(fraction * h * (2 * u[1] - 1))
        scale = 1 - fraction + 2 * fraction * u[2]
        return [_slot(np.full(n, OP_NAMES.index("Affine")), tx, ty, scale)]
    return draw


def blur(probability: float) -> callable:
    """RandomApply(GaussianBlur(3, (0.1, 2.0)), p): a sigma per image, applied to a `probability` share."""
    def draw(n: int, h: int, w: int, gen: torch.Generator) -> list[Slot]:
        u = _uniforms(n, 2, gen)
        applies = u[0] < probability
        sigma = 0.1 + 1.9 * u[1]
        return [_slot(np.where(applies, OP_NAMES.index("Blur"), IDENTITY), np.where(applies, sigma, 0.0))]
    return draw


def erasing_boxes(n: int, h: int, w: int, probability: float, gen: torch.Generator) -> torch.Tensor:
    """RandomErasing(p) boxes (top, left, height, width) per image: an area share in [0.02, 0.33] and an aspect
    ratio log-uniform in [0.3, 3.3], the first of 10 tries that fits; height 0 where nothing is erased."""
    tries = 10
    u = _uniforms(n, 2 * tries + 3, gen)
    area = h * w * (0.02 + 0.31 * u[:tries].T)
    aspect = np.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * u[tries:2 * tries].T)
    hh, ww = np.round(np.sqrt(area * aspect)), np.round(np.sqrt(area / aspect))
    fits = (hh < h) & (ww < w)
    first = fits.argmax(1)[:, None]
    hh, ww = np.take_along_axis(hh, first, 1)[:, 0], np.take_along_axis(ww, first, 1)[:, 0]
    applies = (u[-3] < probability) & fits.any(1)
    top, left = np.floor(u[-2] * (h - hh + 1)), np.floor(u[-1] * (w - ww + 1))
    return torch.from_numpy(np.stack([top, left, np.where(applies, hh, 0.0), ww], 1).astype(np.int64))


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
    """Run the slots in order. Within a slot every image does one op, so the ops' groups are independent: the
    lookup-table ops map their images in one gather, the geometric ops warp theirs in one resampling, and the
    rest go op by op, each op's images together; the groups' outputs are put back in order in one step."""
    for slot in slots:
        ops, params = np.asarray(slot.op), np.asarray(slot.params, dtype=np.float32)
        groups = _groups(ops)
        if groups:
            outs = [fn(_select(x, rows), ops[rows], params[rows]) for rows, fn in groups]
            x = _put_back(x, [rows for rows, _ in groups], outs)
    return x


def _groups(ops: np.ndarray) -> list[tuple[np.ndarray, callable]]:
    """(rows, function) for each group of images a slot transforms together; Identity rows are in none."""
    groups = [(np.flatnonzero(_IS_TABLE[ops]), _look_up_tables),
              (np.flatnonzero(_GEOMETRY_KIND[ops] >= 0), _warp_geometric)]
    groups += [(np.flatnonzero(ops == op), _other(op)) for op in np.unique(ops).tolist()
               if op != IDENTITY and not _IS_TABLE[op] and _GEOMETRY_KIND[op] < 0]
    return [(rows, fn) for rows, fn in groups if len(rows)]


def _select(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    return x.index_select(0, torch.from_numpy(rows).to(x.device))


def _put_back(x: torch.Tensor, row_groups: list[np.ndarray], outs: list[torch.Tensor]) -> torch.Tensor:
    """x with each group's output at its rows (one concatenation and one gather, not a write per group)."""
    done = np.zeros(len(x), dtype=bool)
    done[np.concatenate(row_groups)] = True
    untouched = np.flatnonzero(~done)
    inverse = np.argsort(np.concatenate(row_groups + [untouched]))
    return _select(torch.cat(outs + [_select(x, untouched)]), inverse)


def _other(op: int):
    name = OP_NAMES[op]
    return lambda x, ops, params: OPS[name](x, params)


def _warp_geometric(x: torch.Tensor, ops: np.ndarray, params: np.ndarray) -> torch.Tensor:
    return geometric(x, _GEOMETRY_KIND[ops], params)


def _look_up_tables(x: torch.Tensor, ops: np.ndarray, params: np.ndarray) -> torch.Tensor:
    """Map each image through the lookup tables of the table op it drew."""
    shared, present = np.empty((len(ops), 256), dtype=np.uint8), np.unique(ops).tolist()
    for op in present:
        if OP_NAMES[op] in TABLES:
            rows = ops == op
            shared[rows] = TABLES[OP_NAMES[op]](params[rows])
    luts = torch.from_numpy(shared).to(x.device)[:, None].expand(-1, x.shape[1], -1)
    for op in present:
        if OP_NAMES[op] in LUTS:
            luts = luts.contiguous()
            rows = np.flatnonzero(ops == op)
            picked = torch.from_numpy(rows).to(x.device)
            luts.index_copy_(0, picked, LUTS[OP_NAMES[op]](x.index_select(0, picked), params[rows]))
    return look_up(x, luts)


def random_erasing(x: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """RandomErasing(p) on a (normalised) batch: each image's own box set to 0."""
    return erase(x, erasing_boxes(x.shape[0], x.shape[-2], x.shape[-1], probability, gen))
