"""Augmentation: whole-batch tensor ops for small images, torchvision policies per sample where needed."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from cnnmode.config import AugConfig


def batch_flip(x: torch.Tensor, gen: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror the images where `mask` is true (default: a random half of the batch) left-right."""
    if mask is None:
        mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def alternating_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of `n` images to mirror in `epoch` (1-based): a seeded random half in odd epochs, the rest in even ones.

    Every image is seen both ways in each pair of epochs, which beats a fresh coin per epoch on short runs.
    """
    first = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5
    return first if epoch % 2 == 1 else ~first


def batch_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (reflect) and take a random same-size crop per image (random translation)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect" if padding < min(h, w) else "constant")
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def batch_cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a random `size`-pixel square per image (square may extend past the border)."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=gen).to(x.device)[:, None, None]
    cx = torch.randint(0, w, (b,), generator=gen).to(x.device)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    y0, x0 = cy - size // 2, cx - size // 2
    hole = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x.masked_fill(hole[:, None], 0)


LUMA = (0.299, 0.587, 0.114)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def batch_color(x: torch.Tensor, strength: float, gray_p: float, gen: torch.Generator) -> torch.Tensor:
    """Colour jitter on a float batch in [0, 255]: brightness, contrast and (for RGB) saturation, each by a
    random factor in [1 - strength, 1 + strength] per image; then a random `gray_p` share turned grey."""
    n, c = x.shape[:2]
    if strength > 0:
        def factor() -> torch.Tensor:
            return (1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * strength).to(x.device, x.dtype)

        x = x * factor()
        grey = _luma(x) if c == 3 else x
        x = (x - grey.mean((1, 2, 3), keepdim=True)) * factor() + grey.mean((1, 2, 3), keepdim=True)
        if c == 3:
            grey = _luma(x)
            x = (x - grey) * factor() + grey
        x = x.clamp(0, 255)
    if gray_p > 0 and c == 3:
        mask = (torch.rand(n, generator=gen) < gray_p).to(x.device)[:, None, None, None]
        x = torch.where(mask, _luma(x).expand_as(x), x)
    return x


def _geometric(aug: AugConfig) -> list[v2.Transform]:
    """Per-image rotation, affine and blur transforms the keys ask for."""
    out: list[v2.Transform] = []
    if aug.rotation > 0:
        out.append(v2.RandomRotation(aug.rotation))
    if aug.affine > 0:
        out.append(v2.RandomAffine(0, translate=(aug.affine, aug.affine), scale=(1 - aug.affine, 1 + aug.affine)))
    if aug.blur > 0:
        out.append(v2.RandomApply([v2.GaussianBlur(3, (0.1, 2.0))], p=aug.blur))
    return out


def sample_policy(aug: AugConfig) -> v2.Transform | None:
    """The per-image torchvision transforms (AutoAugment/RandAugment/TrivialAugment; rotation, affine, blur), or
    None."""
    chosen = _geometric(aug)
    if aug.autoaugment:
        chosen.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    if aug.randaugment:
        chosen.append(v2.RandAugment())
    if aug.trivialaugment:
        chosen.append(v2.TrivialAugmentWide())
    return v2.Compose(chosen) if chosen else None


def apply_per_image(x: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """Run a torchvision transform on each image of a batch (policies must differ per image)."""
    return torch.stack([transform(img) for img in x])


def batch_mix(aug: AugConfig, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix over whole batches (soft labels), or None."""
    mixes = []
    if aug.mixup > 0:
        mixes.append(v2.MixUp(alpha=aug.mixup, num_classes=num_classes))
    if aug.cutmix > 0:
        mixes.append(v2.CutMix(alpha=aug.cutmix, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def stream_transforms(aug: AugConfig, size: int, channels: int, mean: list[float], std: list[float],
                      train: bool, device_side: bool = False) -> v2.Transform:
    """Per-sample pipeline for large images streamed from disk (a decoded image in, normalised float tensor out).
    `device_side`: stop after the crop, flip and colour steps with a uint8 tensor; the per-image policies,
    normalisation and random erasing then run batch-wise on the training device (`StreamLoader`)."""
    steps: list[v2.Transform] = [v2.ToImage()]
    if train:
        steps.append(v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True))
        if aug.flip:
            steps.append(v2.RandomHorizontalFlip())
        if aug.color_jitter > 0:
            s = aug.color_jitter
            steps.append(v2.ColorJitter(s, s, s if channels == 3 else 0))
        if aug.grayscale > 0 and channels == 3:
            steps.append(v2.RandomGrayscale(aug.grayscale))
        if device_side:
            return v2.Compose(steps)
        policy = sample_policy(aug)
        if policy is not None:
            steps.append(policy)
    else:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train and aug.random_erasing > 0:
        steps.append(v2.RandomErasing(p=aug.random_erasing))
    return v2.Compose(steps)
