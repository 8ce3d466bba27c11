"""Data: resolve `data.path` into train/val/test loaders, the class names and the normalisation.

Small images (<= 64 px) are decoded once into a uint8 tensor cached under `<data.root>/cache/`, keyed by the
source's content; large images stream from disk through a DataLoader (see `read_splits` and `bundle`). Names load
their module on first use, so `cnnmode data ...` parses its flags without torch.
"""
from cnnmode.registry import lazy_exports

_HOMES = {"TEST_SEED": "bundle", "DataBundle": "bundle", "build_data": "bundle", "StreamLoader": "loaders",
          "TensorLoader": "loaders", "Found": "read_splits", "Split": "read_splits"}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
