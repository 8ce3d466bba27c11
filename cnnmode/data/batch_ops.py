"""Image ops on whole batches with one parameter per image.

Each op does to a (k, C, H, W) uint8 batch what torchvision's v2 tensor kernel of the same name does to one image
with one magnitude (same arithmetic, same rounding, nearest-neighbour geometry, zeros outside), but every image
brings its own magnitude, so k images cost a handful of tensor calls instead of k Python calls. `OPS` maps the
names torchvision's AutoAugment family uses (plus Affine and Blur for `aug.affine` and `aug.blur`) to them.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, params (k, 3)) → images


def inverse_affine(angle: np.ndarray, tx: np.ndarray, ty: np.ndarray, scale: np.ndarray, shear_x: np.ndarray,
                   shear_y: np.ndarray, cx: np.ndarray | float = 0.0, cy: np.ndarray | float = 0.0) -> np.ndarray:
    """Per-image (k, 2, 3) matrices mapping output pixels back to input pixels for a rotation by `angle` degrees
    (clockwise), shear in degrees, scale and translation about the centre (cx, cy), in pixel coordinates measured
    from the image centre: the inverse of T · C · R·S·Shear · C⁻¹, as torchvision's tensor `affine` uses it.
    (NumPy in double precision: a few dozen scalar-sized steps cost far less there than as tensor calls.)"""
    rot, sx, sy = np.radians(angle), np.radians(shear_x), np.radians(shear_y)
    a = np.cos(rot - sy) / np.cos(sy)
    b = -(a * np.tan(sx) + np.sin(rot))
    c = np.sin(rot - sy) / np.cos(sy)
    d = np.cos(rot) - c * np.tan(sx)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return np.stack([np.stack([m0, m1, m2], 1), np.stack([m3, m4, m5], 1)], 1)


@functools.lru_cache(maxsize=16)
def _pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(1, h·w, 3): every output pixel's (x, y, 1), measured from the image centre."""
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=device)
    return torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=device)], -1).view(
        1, h * w, 3)


def warp(x: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
    """Resample each image through its own inverse affine matrix (nearest neighbour, zeros outside)."""
    k, _, h, w = x.shape
    theta = torch.from_numpy((matrices.transpose(0, 2, 1) / np.array([0.5 * w, 0.5 * h])).astype(np.float32))
    grid = _pixel_grid(h, w, x.device).expand(k, -1, -1).bmm(theta.to(x.device)).view(k, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(x.dtype)


GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Affine")


def geometric(x: torch.Tensor, kinds: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Warp each image by its own geometric op (`kinds`: indices into GEOMETRIC), all in one resampling: shears
    about the top-left corner by atan(m) (AutoAugment's convention), shifts by int(m) pixels, rotations by m
    degrees counter-clockwise, and Affine's (shift x, shift y, scale)."""
    h, w = x.shape[-2:]
    kinds, p = kinds.cpu().numpy(), p.cpu().double().numpy()
    m, zero = p[:, 0], np.zeros(len(p))
    is_ = {name: kinds == i for i, name in enumerate(GEOMETRIC)}
    shear_deg = np.degrees(np.arctan(m))
    shift_x = np.where(is_["TranslateX"], np.trunc(m), np.where(is_["Affine"], p[:, 0], zero))
    shift_y = np.where(is_["TranslateY"], np.trunc(m), np.where(is_["Affine"], p[:, 1], zero))
    sheared = is_["ShearX"] | is_["ShearY"]
    matrices = inverse_affine(np.where(is_["Rotate"], -m, zero), shift_x, shift_y, np.where(is_["Affine"], p[:, 2], 1.0),
                              np.where(is_["ShearX"], shear_deg, zero), np.where(is_["ShearY"], shear_deg, zero),
                              np.where(sheared, -0.5 * w, zero), np.where(sheared, -0.5 * h, zero))
    return warp(x, matrices)


def _geometric_op(name: str) -> Op:
    kind = GEOMETRIC.index(name)
    return lambda x, p: geometric(x, torch.full((len(p),), kind), p)


def _per_image(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return p.to(x.device, torch.float32).view(-1, 1, 1, 1)


def _factors(p: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 + magnitude, -magnitude) per image, worked out in double precision as torchvision does with floats."""
    ratio = 1 + p[:, 0].double()
    return _per_image(ratio, x), _per_image(1.0 - ratio, x)


def _blend(x: torch.Tensor, other: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    ratio, rest = _factors(p, x)
    return (x * ratio).addcmul_(other, rest).clamp_(0, 255).to(x.dtype)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).unsqueeze(1).floor_()


def brightness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Scale each image's brightness by 1 + p[:, 0]."""
    return (x * _factors(p, x)[0]).clamp_(0, 255).to(x.dtype)


def saturation(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Blend each RGB image with its grey version by 1 + p[:, 0] (grey images are left alone)."""
    if x.shape[1] == 1:
        return x
    return _blend(x, _grey(x), p)


def contrast(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level by 1 + p[:, 0]."""
    grey = _grey(x) if x.shape[1] == 3 else x.float()
    return _blend(x, grey.mean((1, 2, 3), keepdim=True), p)


SHARPEN = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def sharpness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Blend each image's interior with a smoothed copy by 1 + p[:, 0] (border pixels kept)."""
    k, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    out = x.float()
    smooth = F.conv2d(out, SHARPEN.to(x.device).expand(c, 1, 3, 3), groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.addcmul_(smooth - inner, _factors(p, x)[1])
    return out.clamp_(0, 255).to(x.dtype)


def posterize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Keep the top p[:, 0] bits of each pixel."""
    bits = p[:, 0].trunc().long().clamp(0, 8)  # torchvision passes int(magnitude)
    masks = ((255 << (8 - bits)) & 255).to(x.device, torch.uint8).view(-1, 1, 1, 1)
    return x & masks


def solarize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above 255 · p[:, 0]."""
    return torch.where(x >= _per_image(255.0 * p[:, 0], x), 255 - x, x)


def blur(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """3×3 Gaussian blur with sigma p[:, 0] per image (reflect padding), as torchvision's `gaussian_blur`."""
    k, c, h, w = x.shape
    lim = 1.0 / math.sqrt(2.0)
    taps = torch.tensor([-lim, 0.0, lim], device=x.device)
    kernel1d = torch.softmax(-(taps / p[:, :1].to(x.device, torch.float32)) ** 2, dim=1)
    kernels = (kernel1d[:, :, None] * kernel1d[:, None, :]).repeat_interleave(c, 0)[:, None]
    padded = F.pad(x.float().view(1, k * c, h, w), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernels, groups=k * c).view(k, c, h, w).round_().to(x.dtype)


def _whole(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    return lambda x, p: fn(x)


OPS: dict[str, Op] = {
    "Identity": lambda x, p: x, **{name: _geometric_op(name) for name in GEOMETRIC},
    "Brightness": brightness, "Color": saturation,
    "Contrast": contrast, "Sharpness": sharpness, "Posterize": posterize, "Solarize": solarize,
    "AutoContrast": _whole(TF.autocontrast), "Equalize": _whole(TF.equalize), "Invert": _whole(TF.invert),
    "Blur": blur,
}
OP_NAMES = tuple(OPS)


def erase(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero a rectangle per image: boxes (n, 4) = (top, left, height, width); height 0 leaves an image alone."""
    top, left, hh, ww = (v.to(x.device).view(-1, 1, 1) for v in boxes.unbind(1))
    ys = torch.arange(x.shape[-2], device=x.device).view(1, -1, 1)
    xs = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    hole = (ys >= top) & (ys < top + hh) & (xs >= left) & (xs < left + ww)
    return x.masked_fill(hole[:, None], 0)
