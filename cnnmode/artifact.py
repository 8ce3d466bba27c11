"""The artifact: one file with weights, the model's registry name and arguments, class names and preprocessing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnmode.errors import UsageError
from cnnmode.files import atomic_torch_save, torch_load
from cnnmode.models import build_model, head_module
from cnnmode.rundir import Target, resolve_target

FORMAT = "cnnmode-artifact"
MIN_SIDE, MAX_SIDE = 8, 4096  # image sides an artifact may ask for (a larger one would exhaust memory at warm-up)


@dataclass
class Artifact:
    """A loaded artifact: the model (eval mode) and what it needs to see images as in training."""
    model: nn.Module
    name: str
    args: dict[str, Any]
    classes: list[str]
    preprocess: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file it was loaded from

    @property
    def temperature(self) -> float:
        """What the logits are divided by before the softmax (fitted after training; 1 for older artifacts)."""
        return self.preprocess.get("temperature", 1.0)

    @property
    def multilabel(self) -> bool:
        """True for a model of label sets (one sigmoid per label)."""
        return self.preprocess.get("task") == "multilabel"

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities of this model's logits (see `calibrated`)."""
        return calibrated(logits, self.temperature, self.multilabel)

    @property
    def params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.model.parameters())


def calibrated(logits: torch.Tensor, temperature: float, multilabel: bool) -> torch.Tensor:
    """softmax(logits / T) over the classes, or for label sets sigmoid(logits / T) per label."""
    scaled = logits.float() / temperature
    return scaled.sigmoid() if multilabel else scaled.softmax(-1)


def save_artifact(path: Path, model: nn.Module, name: str, args: dict[str, Any], classes: list[str],
                  preprocess: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Write an artifact atomically; contents are tensors and plain types only."""
    return atomic_torch_save({"format": FORMAT, "version": 1, "model": {"name": name, "args": dict(args)},
                              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                              "classes": list(classes), "preprocess": dict(preprocess), "meta": meta or {}}, path)


def load_artifact(target: str | Path | Target, device: str | torch.device = "cpu") -> Artifact:
    """Load an artifact file (or a run folder's `model.pt`) and rebuild its model."""
    path = (target if isinstance(target, Target) else resolve_target(target)).file
    blob = torch_load(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UsageError(f"{path} is not a CNN Mode artifact (expected a model.pt written by `cnnmode train`)")
    try:
        model = build_model(blob["model"]["name"], **blob["model"]["args"])
        model.load_state_dict(blob["state_dict"])
    except UsageError as e:  # e.g. a model this version does not have
        raise UsageError(f"{path} cannot be rebuilt here: {e}") from None
    except (KeyError, TypeError, RuntimeError) as e:
        raise UsageError(f"{path} is a damaged CNN Mode artifact ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else 'missing fields'})") from None
    check_preprocess(blob.get("preprocess"), blob.get("classes"), path)
    outputs = _outputs(model)
    if outputs is not None and outputs != len(blob["classes"]):
        raise UsageError(f"{path} is a damaged CNN Mode artifact: its model has {outputs} outputs but it names "
                         f"{len(blob['classes'])} classes")
    model.to(device).eval()
    return Artifact(model, blob["model"]["name"], blob["model"]["args"], blob["classes"], blob["preprocess"],
                    blob.get("meta", {}), path)


def _outputs(model: nn.Module) -> int | None:
    """The classifier head's outputs (None for a model without a Linear head, such as SqueezeNet's conv head)."""
    try:
        return head_module(model).out_features
    except IndexError:
        return None


def check_preprocess(preprocess: Any, classes: Any, path: Path) -> None:
    """Refuse, in one line naming the file, preprocessing no model can run with (an image size outside 8-4096 px,
    channels other than 1 or 3, a mean/std per channel missing or a std of 0, a task other than single or
    multilabel, label thresholds that are not one probability per class) or a class list that is not one."""
    def bad(why: str) -> UsageError:
        return UsageError(f"{path} is a damaged CNN Mode artifact: {why}")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad("its class list is missing or not a list of names")
    if not isinstance(preprocess, dict):
        raise bad("its preprocessing is missing")
    size, channels = preprocess.get("img_size"), preprocess.get("channels")
    if not isinstance(size, int) or not MIN_SIDE <= size <= MAX_SIDE:
        raise bad(f"img_size {size!r} is not a side length of {MIN_SIDE}-{MAX_SIDE} pixels")
    if channels not in (1, 3):
        raise bad(f"channels {channels!r} is not 1 or 3")
    for key in ("mean", "std"):
        values = preprocess.get(key)
        if not isinstance(values, list) or len(values) != channels or not all(isinstance(v, (int, float))
                                                                              for v in values):
            raise bad(f"{key} {values!r} is not one number per channel")
    if min(preprocess["std"]) <= 0:
        raise bad(f"std {preprocess['std']} has a value of 0 or less")
    if preprocess.get("task", "single") not in ("single", "multilabel"):
        raise bad(f"task {preprocess.get('task')!r} is not single or multilabel")
    cuts = preprocess.get("thresholds")
    if cuts is not None and (not isinstance(cuts, list) or len(cuts) != len(classes)
                             or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in cuts)):
        raise bad(f"thresholds {cuts!r} are not one probability per class")
