"""CNN Mode: train, evaluate, explain, export and serve image classifiers with PyTorch.

The Python API: `train` (a run folder from a config), `load_artifact` (a model.pt), `Predictor` (images →
top-k classes, on any backend). They are imported on first use, so `import cnnmode` stays light.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Predictor", "load_artifact", "train", "__version__"]

_API = {"train": "cnnmode.workflows.train", "load_artifact": "cnnmode.artifact", "Predictor": "cnnmode.deploy.predict"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cnnmode' has no attribute {name!r}")
