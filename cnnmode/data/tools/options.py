"""What `cnnmode data check` and `data convert` are told: each field a flag of the verb, its default and help
text written once here."""
from __future__ import annotations

from dataclasses import dataclass

from cnnmode.config import opt
from cnnmode.errors import UsageError


@dataclass
class CheckOptions:
    """What `data check` flags: images smaller than `min_size` px on a side; near-duplicates within `near` bits of
    64 (-1: exact duplicates only); a train imbalance ratio (largest / smallest class) from `max_imbalance` up."""
    min_size: int = opt(16, "flag images smaller than this on a side", metavar="PX")
    near: int = opt(4, "near-duplicates: perceptual hashes at most this many bits apart of 64 (-1: exact "
                    "duplicates only)", metavar="BITS")
    max_imbalance: float = opt(10.0, "flag a largest/smallest train class ratio from this up", metavar="RATIO")

    def check(self) -> "CheckOptions":
        """Refuse thresholds that cannot mean anything, in one line."""
        if self.min_size < 1:
            raise UsageError(f"--min-size {self.min_size}: give a side length of at least 1 pixel")
        if not -1 <= self.near <= 64:
            raise UsageError(f"--near {self.near}: give -1 (exact duplicates only) to 64 bits of the 64-bit hash")
        if not self.max_imbalance >= 1:
            raise UsageError(f"--max-imbalance {self.max_imbalance}: a largest/smallest class ratio is at least 1")
        return self


@dataclass
class ConvertOptions:
    """Each field is the `cnnmode data convert` flag of the same name."""
    out: str = opt(None, "a new folder", metavar="DIR")
    names: str | None = opt(None, "IDX: class names by label number, comma-separated (default: the numbers)")
    coco_images: str | None = opt(None, "COCO: the folder the annotation's file names are in", metavar="DIR")
    min_size: int = opt(8, "COCO: leave out boxes smaller than this (px)")
    pad: float = opt(0.0, "COCO: widen each box by this fraction per side")
    split: str | None = opt(None, "COCO: write into DIR/SPLIT/", ("train", "val", "test"))
