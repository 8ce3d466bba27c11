"""Decoding images to uint8 tensors (small images, cached) and probing sizes/modes."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def pil_to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (grayscale, palette, RGBA, CMYK, 16-bit) to L (1 channel) or RGB (3)."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 / max(float(arr.max()), 1.0) if arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    return img.convert("L" if channels == 1 else "RGB")


def probe(data: bytes) -> tuple[tuple[int, int], str]:
    """(size, mode) read from an image header without decoding the pixels."""
    with Image.open(io.BytesIO(data)) as img:
        return img.size, img.mode


def decode_many(blobs: list[bytes], size: int, channels: int) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode images to one uint8 (N, C, size, size) tensor; returns (tensor, kept indices, failure reasons)."""
    out = np.empty((len(blobs), size, size, channels), dtype=np.uint8)
    kept, reasons = [], []
    for i, blob in enumerate(blobs):
        if not blob:
            reasons.append("empty file")
            continue
        try:
            with Image.open(io.BytesIO(blob)) as img:
                img = pil_to_mode(img, channels)
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                arr = np.asarray(img)
        except DECODE_ERRORS as e:
            reasons.append(f"cannot decode: {type(e).__name__}: {e}")
            continue
        out[len(kept)] = arr.reshape(size, size, channels)
        kept.append(i)
        reasons.append("")
    images = torch.from_numpy(out[: len(kept)]).permute(0, 3, 1, 2).contiguous()
    return images, kept, reasons


def verify_file(path: Path) -> str:
    """Empty string if the file is a readable image, else the reason it is not."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            img.load()
        return ""
    except DECODE_ERRORS as e:
        return f"cannot decode: {type(e).__name__}: {e}"
