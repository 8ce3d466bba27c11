"""The artifact: one file with weights, the model's registry name and arguments, class names and preprocessing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnmode.errors import UsageError
from cnnmode.files import atomic_torch_save, torch_load
from cnnmode.models import build_model
from cnnmode.rundir import Target, resolve_target

FORMAT = "cnnmode-artifact"


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
    def params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.model.parameters())


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
    model.to(device).eval()
    return Artifact(model, blob["model"]["name"], blob["model"]["args"], blob["classes"], blob["preprocess"],
                    blob.get("meta", {}), path)
