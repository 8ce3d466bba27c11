"""What `cnnmode explain` is told besides the model and the images: every flag, its default and help text."""
from __future__ import annotations

from dataclasses import dataclass

from cnnmode.config import opt

METHODS = ("gradcam", "gradcam++", "scorecam")
SPLITS = ("test", "val")


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
