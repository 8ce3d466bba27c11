"""CNN Mode: train, evaluate, explain, export and serve image classifiers with PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"


def train(*args, **kwargs):
    """Train a model and return its run folder (see `cnnmode.engine.trainer.train`)."""
    from cnnmode.engine.trainer import train as _train

    return _train(*args, **kwargs)


def load_artifact(*args, **kwargs):
    """Load a `model.pt` artifact (see `cnnmode.deploy.artifact.load_artifact`)."""
    from cnnmode.deploy.artifact import load_artifact as _load

    return _load(*args, **kwargs)


__all__ = ["train", "load_artifact", "__version__"]
