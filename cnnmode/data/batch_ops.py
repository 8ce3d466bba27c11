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

Op = Callable[[torch.Tensor, np.ndarray], torch.Tensor]  # (images, params (k, 3), float32) → images


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


def geometric(x: torch.Tensor, kinds: np.ndarray, p: np.ndarray) -> torch.Tensor:
    """Warp each image by its own geometric op (`kinds`: indices into GEOMETRIC), all in one resampling: shears
    about the top-left corner by atan(m) (AutoAugment's convention), shifts by int(m) pixels, rotations by m
    degrees counter-clockwise, and Affine's (shift x, shift y, scale)."""
    h, w = x.shape[-2:]
    kinds, p = np.asarray(kinds), np.asarray(p, dtype=np.float32).astype(np.float64)
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
    return lambda x, p: geometric(x, np.full(len(p), kind), p)


def _factors(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1 + magnitude, -magnitude) per image as float32, worked out in double as torchvision does with floats."""
    ratio = 1.0 + np.asarray(p, dtype=np.float32)[:, 0].astype(np.float64)
    return ratio.astype(np.float32), (1.0 - ratio).astype(np.float32)


def _on(x: torch.Tensor, values: np.ndarray, *shape: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).to(x.device).view(*shape)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).unsqueeze(1).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    ratio, rest = _factors(p)
    return (x * _on(x, ratio, -1, 1, 1, 1)).addcmul_(other, _on(x, rest, -1, 1, 1, 1)).clamp_(0, 255).to(x.dtype)


# Ops whose output pixel depends only on the input pixel's value (and on per-image, per-channel statistics) are
# lookup tables per image and channel, (k, C, 256), made with the kernel's own arithmetic applied to the 256
# values, so every table op of a policy step costs one gather over the batch. Tables that depend on the
# parameters only are made in NumPy (float32 arithmetic is IEEE there too): (k, 256), shared by the channels.
_LEVELS = np.arange(256, dtype=np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0, 255).astype(np.uint8)  # torch's float → uint8 conversion truncates as well


def brightness_table(p: np.ndarray) -> np.ndarray:
    """Scale brightness by 1 + p[:, 0]."""
    return _to_uint8(_LEVELS * _factors(p)[0][:, None])


def posterize_table(p: np.ndarray) -> np.ndarray:
    """Keep the top p[:, 0] bits of each value (torchvision passes int(magnitude))."""
    bits = np.clip(np.trunc(np.asarray(p)[:, 0]).astype(np.int64), 0, 8)
    return (_LEVELS.astype(np.uint8) & ((255 << (8 - bits)) & 255).astype(np.uint8)[:, None])


def solarize_table(p: np.ndarray) -> np.ndarray:
    """Invert the values at or above 255 · p[:, 0]."""
    threshold = (255.0 * np.asarray(p, dtype=np.float32)[:, 0]).astype(np.float32)[:, None]
    return np.where(_LEVELS >= threshold, 255 - _LEVELS, _LEVELS).astype(np.uint8)


def invert_table(p: np.ndarray) -> np.ndarray:
    """255 - value."""
    return np.broadcast_to((255 - _LEVELS).astype(np.uint8), (len(p), 256))


TABLES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Brightness": brightness_table, "Posterize": posterize_table, "Solarize": solarize_table,
    "Invert": invert_table,
}


@functools.lru_cache(maxsize=8)
def _levels(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(_LEVELS).to(device).view(1, 1, 256)


def contrast_lut(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """Blend with the image's mean grey level by 1 + p[:, 0]."""
    grey = _grey(x) if x.shape[1] == 3 else x.float()
    ratio, rest = _factors(p)
    mean = grey.mean((1, 2, 3)).view(-1, 1, 1).expand(-1, 1, 256)
    table = (_levels(x.device) * _on(x, ratio, -1, 1, 1)).addcmul_(mean, _on(x, rest, -1, 1, 1))
    return table.clamp_(0, 255).to(torch.uint8).expand(-1, x.shape[1], -1)


def autocontrast_lut(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """Stretch each channel's range to 0-255 (a flat channel is left alone)."""
    low, high = (v.float() for v in torch.aminmax(x.flatten(2), dim=2, keepdim=True))
    span = high.sub_(low)
    flat_channel = span == 0
    inv_scale = span.mul_(1.0 / 255).masked_fill_(flat_channel, 1.0)
    return (_levels(x.device) - low.masked_fill_(flat_channel, 0.0)).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def equalize_lut(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """PIL's histogram equalisation per channel (a channel with one dominant value is left alone)."""
    flat = x.flatten(2).long()
    hist = torch.zeros(*flat.shape[:2], 256, dtype=torch.int32, device=x.device)
    hist.scatter_add_(2, flat, torch.ones(1, dtype=torch.int32, device=x.device).expand_as(flat))
    cum = hist.cumsum(2)
    top = hist.gather(2, cum.argmax(2, keepdim=True))  # how many pixels hold the largest value present
    step = (flat.shape[2] - top).div_(255, rounding_mode="floor")
    # value v maps through the count below it; for v = 0 that is (step // 2) // step = 0
    lut = F.pad(cum[..., :-1], (1, 0)).add_(step // 2).div_(step.clamp(min=1), rounding_mode="floor")
    return torch.where(step > 0, lut.clamp_(0, 255), _levels(x.device)).to(torch.uint8)


LUTS: dict[str, Callable[[torch.Tensor, np.ndarray], torch.Tensor]] = {
    "Contrast": contrast_lut, "AutoContrast": autocontrast_lut, "Equalize": equalize_lut,
}
TABLE_OPS = (*TABLES, *LUTS)


def look_up(x: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
    """Map every pixel through its image's and channel's table ((k, C, 256) uint8)."""
    return luts.gather(2, x.flatten(2).long()).view_as(x)


def _table_op(name: str) -> Op:
    def op(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
        if name in LUTS:
            return look_up(x, LUTS[name](x, p))
        return look_up(x, _on(x, TABLES[name](np.asarray(p)), len(x), 1, 256).expand(-1, x.shape[1], -1))
    return op


def saturation(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """Blend each RGB image with its grey version by 1 + p[:, 0] (grey images are left alone)."""
    if x.shape[1] == 1:
        return x
    return _blend(x, _grey(x), p)


def sharpness(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """Blend each image's interior with a smoothed copy by 1 + p[:, 0] (border pixels kept).

    The smoothed copy is torchvision's 3×3 kernel (1s around a 5, over 13), rounded: the exact sum S of nine
    neighbours plus four times the centre is an integer, and S / 13 is never within 1/26 of a half, so rounding it
    gives what the float convolution gives."""
    k, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    out = x.float()
    inner = out[..., 1:-1, 1:-1]
    rows = out[..., :, :-2] + out[..., :, 1:-1] + out[..., :, 2:]  # exact integer sums in float
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    smooth = box.add_(inner, alpha=4.0).div_(13.0).round_()
    inner.addcmul_(smooth.sub_(inner), _on(x, _factors(p)[1], -1, 1, 1, 1))
    return out.clamp_(0, 255).to(x.dtype)


def blur(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """3×3 Gaussian blur with sigma p[:, 0] per image (reflect padding), as torchvision's `gaussian_blur`."""
    k, c, h, w = x.shape
    lim = 1.0 / math.sqrt(2.0)
    taps = torch.tensor([-lim, 0.0, lim], device=x.device)
    kernel1d = torch.softmax(-(taps / _on(x, np.asarray(p, dtype=np.float32)[:, :1], -1, 1)) ** 2, dim=1)
    kernels = (kernel1d[:, :, None] * kernel1d[:, None, :]).repeat_interleave(c, 0)[:, None]
    padded = F.pad(x.float().view(1, k * c, h, w), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernels, groups=k * c).view(k, c, h, w).round_().to(x.dtype)


OPS: dict[str, Op] = {
    "Identity": lambda x, p: x, **{name: _geometric_op(name) for name in GEOMETRIC},
    **{name: _table_op(name) for name in TABLE_OPS}, "Color": saturation, "Sharpness": sharpness, "Blur": blur,
}
OP_NAMES = tuple(OPS)


def erase(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero a rectangle per image: boxes (n, 4) = (top, left, height, width); height 0 leaves an image alone."""
    top, left, hh, ww = (v.to(x.device).view(-1, 1, 1) for v in boxes.unbind(1))
    ys = torch.arange(x.shape[-2], device=x.device).view(1, -1, 1)
    xs = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    hole = (ys >= top) & (ys < top + hh) & (xs >= left) & (xs < left + ww)
    return x.masked_fill(hole[:, None], 0)
