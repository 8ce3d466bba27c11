"""Data: resolve `data.path` into train/val/test loaders, the class names and the normalisation.

Small images (<= 64 px) are decoded once into a uint8 tensor cached under `<data.root>/cache/`, keyed by the
source's content; large images stream from disk through a DataLoader (see `read` and `build`).
"""
from cnnmode.data.build import TEST_SEED, DataBundle, build_data
from cnnmode.data.loaders import StreamLoader, TensorLoader
from cnnmode.data.read import Found, Split

__all__ = ["TEST_SEED", "DataBundle", "Found", "Split", "StreamLoader", "TensorLoader", "build_data"]
