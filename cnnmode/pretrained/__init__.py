"""The models that ship with the package (`cifar10`), usable by name wherever a verb takes a model."""
from cnnmode.pretrained.shipped import HERE, shipped_info, shipped_names, shipped_path

__all__ = ["HERE", "shipped_info", "shipped_names", "shipped_path"]
