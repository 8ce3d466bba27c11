"""What `cnnmode explain` and `cnnmode summary` are told besides the model (and images): every flag, its default
and help text, written once here (the command line builds its flags from these dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass

from cnnmode.config import all_keys, opt

METHODS = ("gradcam", "gradcam++", "scorecam")
SPLITS = ("test", "val")
OPTIMIZERS = all_keys()["optim.name"].metadata["choices"]


@dataclass
class ExplainOptions:
    """Each field is the `cnnmode explain` flag of the same name."""
    method: str = opt("gradcam", "CAM method", METHODS)
    layer: str | None = opt(None, "target layer name (default: the architecture's last feature block)")
    target: str | None = opt(None, "explain this class instead of the predicted one", metavar="CLASS")
    features: str | None = opt(None, "also draw the first 16 feature maps of LAYER", metavar="LAYER")
    embedding: bool = opt(False, "PCA scatter of penultimate features over a split")
    tsne: bool = opt(False, "with --embedding: also a t-SNE scatter")
    data: str | None = opt(None, "data for --embedding (default: the run's own)")
    split: str = opt("test", "the split --embedding draws", SPLITS)
    out: str | None = opt(None, "output folder (default: <run>/explain)", metavar="DIR")
    per_figure: int = opt(8, "images per CAM figure")


@dataclass
class SummaryOptions:
    """Each field is the `cnnmode summary` flag of the same name."""
    recipe: str | None = opt(None, "describe the network a recipe trains (its model, stem, width and image size) "
                             "and estimate its memory at the recipe's batch, optimizer and precision; no "
                             "MODEL_OR_ARTIFACT needed", metavar="RECIPE")
    stem: str = opt("auto", "ResNet stem for a model given by name: cifar, imagenet, or auto (cifar below 64 px)",
                    ("auto", "cifar", "imagenet"))
    img_size: int | None = opt(None, "input side (default: the recipe's or the artifact's, else 32)")
    batch_size: int | None = opt(None, "batch for the memory estimate (default: the recipe's, else 128)")
    num_classes: int = opt(10, "classes, for a model given by name")
    in_channels: int = opt(3, "input channels, for a model given by name")
    optimizer: str | None = opt(None, "the optimizer whose state the memory estimate counts (default: the "
                                "recipe's, else adamw)", OPTIMIZERS)
    fp32: bool = opt(False, "estimate activations in fp32 instead of bf16/fp16 (default: as the recipe's "
                     "train.amp, else mixed precision)")
    json: bool = opt(False, "machine-readable output")
