"""The artifact: one file with weights, the model's registry name and arguments, class names and preprocessing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnmode.errors import UsageError
from cnnmode.files import atomic_torch_save, torch_load

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


def save_artifact(path: Path, model: nn.Module, name: str, args: dict[str, Any], classes: list[str],
                  preprocess: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Write an artifact atomically; contents are tensors and plain types only."""
    return atomic_torch_save({"format": FORMAT, "version": 1, "model": {"name": name, "args": dict(args)},
                              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                              "classes": list(classes), "preprocess": dict(preprocess), "meta": meta or {}}, path)


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load an artifact file (or a run folder's `model.pt`) and rebuild its model."""
    from cnnmode.models import build_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise UsageError(f"no artifact at {path}")
    blob = torch_load(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UsageError(f"{path} is not a CNN Mode artifact (expected a model.pt written by `cnnmode train`)")
    model = build_model(blob["model"]["name"], **blob["model"]["args"])
    model.load_state_dict(blob["state_dict"])
    model.to(device).eval()
    return Artifact(model, blob["model"]["name"], blob["model"]["args"], blob["classes"], blob["preprocess"],
                    blob.get("meta", {}))


def artifact_data(target: str | Path, art: Artifact, data: str | None, purpose: str,
                  device: str | torch.device = "cpu", subset: float = 0, need_val: bool = False):
    """(config, DataBundle) to run an artifact on: `data`, else its run folder's own data; always with the
    artifact's size, channels and normalisation, and refused when the class lists differ. `subset` keeps a
    stratified sample of every split (as `data.subset`); `need_val` carves a validation split from the training
    images when the run had none (its `val` would otherwise be the test split)."""
    from cnnmode.config import Config, config_from_dict, read_yaml
    from cnnmode.data import build_data

    path = Path(target)
    run_dir = path if path.is_dir() and (path / "config.yaml").exists() else None
    cfg = config_from_dict(read_yaml(run_dir / "config.yaml")) if run_dir else Config()
    if data:
        cfg.data.path = data
    elif run_dir is None:
        raise UsageError(f"{purpose} an artifact file needs --data PATH (a run folder remembers its data)")
    cfg.data.img_size, cfg.data.channels = art.preprocess["img_size"], art.preprocess["channels"]
    cfg.train.channels_last = False
    if subset:
        cfg.data.subset = subset
    if need_val and cfg.data.val_split == 0 and not cfg.data.folds:
        cfg.data.val_split = 0.1
    bundle = build_data(cfg, torch.device(device), norm=(art.preprocess["mean"], art.preprocess["std"]))
    if bundle.classes != art.classes:
        raise UsageError(f"the model was trained on classes {art.classes} but {cfg.data.path} has "
                         f"{bundle.classes}; use data with the same class folders")
    return cfg, bundle
