"""One image file looked at closely: can it be decoded to the end, its size, mode and EXIF rotation, a content
hash for exact duplicates and a 64-bit DCT hash (pHash) for near-duplicates."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnmode.data.decode import DECODE_ERRORS

HASH_SIDE = 32  # the image is shrunk to 32x32 grey; the hash is the sign of its 8x8 lowest DCT frequencies
UNUSUAL_MODES = {"CMYK": "CMYK", "P": "palette", "PA": "palette with alpha", "RGBA": "alpha", "LA": "alpha",
                 "1": "1-bit", "I": "32-bit integer", "F": "32-bit float", "I;16": "16-bit", "I;16B": "16-bit",
                 "I;16L": "16-bit", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}
EXIF_ORIENTATION = 0x0112


@dataclass
class Looked:
    """What one file is: `problem` ('' when it decodes) with its kind (`empty`, `truncated`, `not_image`,
    `unreadable`), and for good files the size, mode, format, EXIF orientation and hashes."""
    problem: str = ""
    kind: str = ""
    size: tuple[int, int] = (0, 0)
    mode: str = ""
    format: str = ""
    orientation: int = 1
    sha256: str = ""
    gray: np.ndarray | None = None  # HASH_SIDE x HASH_SIDE float32, for the perceptual hash


def look(data: bytes) -> Looked:
    """Decode `data` fully (a truncated file fails here, as it would mid-training) and describe it."""
    if not data:
        return Looked("zero-byte file", "empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, mode, fmt = img.size, img.mode, img.format or ""
            orientation = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
            img.draft("L", (HASH_SIDE * 2, HASH_SIDE * 2))  # JPEG: decode at a reduced scale, much faster
            img.load()
            gray = img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.BILINEAR)
        if fmt == "PNG":  # a PNG cut inside its last chunk still loads; its checksums do not
            with Image.open(io.BytesIO(data)) as again:
                again.verify()
    except UnidentifiedImageError:
        return Looked("not an image (no known image format)", "not_image")
    except DECODE_ERRORS as e:
        text = str(e)
        return Looked(f"cannot decode: {type(e).__name__}: {text}", _damage(text))
    return Looked(size=size, mode=mode, format=fmt, orientation=orientation,
                  sha256=hashlib.sha256(data).hexdigest(), gray=np.asarray(gray, dtype=np.float32))


def _damage(message: str) -> str:
    """`truncated` for a file that ends early (Pillow: 'truncated', or a PNG whose last chunk is cut), else
    `unreadable` (bytes changed in place: a checksum that does not match, a compressed stream that is broken)."""
    text = message.lower()
    if "checksum" in text or "data stream" in text:
        return "unreadable"
    return "truncated" if "truncated" in text or "broken png file (chunk" in text else "unreadable"


def _dct_rows(n: int, keep: int) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix of size n."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


def phash(grays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hashes as uint64, flat mask) for N grey HASH_SIDE² images: bit i says whether the i-th of the 8x8
    lowest DCT coefficients is above their median (the DC term left out of the median). A flat image (no
    detail) has a hash of noise, so it is flagged to be compared by exact content only."""
    d = _dct_rows(HASH_SIDE, 8)
    coeffs = (d @ grays @ d.T).reshape(len(grays), 64)
    median = np.median(coeffs[:, 1:], axis=1, keepdims=True)
    bits = (coeffs > median).astype(np.uint64)
    hashes = (bits << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    flat = grays.reshape(len(grays), -1).std(axis=1) < 2.0
    return hashes, flat
