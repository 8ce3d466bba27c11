"""Data to run a trained model on: a run folder's own data or another source, seen exactly as the model saw it."""
from __future__ import annotations

import torch

from cnnmode.config import Config, config_from_dict, read_yaml
from cnnmode.data.bundle import DataBundle, build_data
from cnnmode.errors import UsageError
from cnnmode.rundir import Target


def data_for_model(target: Target, preprocess: dict, classes: list[str], data: str | None, purpose: str,
                   device: str | torch.device = "cpu", subset: float = 0,
                   need_val: bool = False) -> tuple[Config, DataBundle]:
    """(config, DataBundle) to run a model on: `data`, else its run folder's own data; always with the model's
    size, channels and normalisation (`preprocess`), and refused when the class lists differ. `subset` keeps a
    stratified sample of every split (as `data.subset`); `need_val` carves a validation split from the training
    images when the run had none (its `val` would otherwise be the test split)."""
    cfg = config_from_dict(read_yaml(target.run.config)) if target.run is not None else Config()
    if data:
        cfg.data.path = data
    elif target.run is None:
        raise UsageError(f"{purpose} a model file needs --data PATH (a run folder remembers its data)")
    cfg.data.img_size, cfg.data.channels = preprocess["img_size"], preprocess["channels"]
    cfg.data.task = preprocess.get("task", "single")  # a model of label sets reads label sets, and only them
    cfg.train.channels_last = False
    if subset:
        cfg.data.subset = subset
    if need_val and cfg.data.val_split == 0 and not cfg.data.folds:
        cfg.data.val_split = 0.1
    bundle = build_data(cfg, torch.device(device), norm=(preprocess["mean"], preprocess["std"]))
    if bundle.classes != classes:
        raise UsageError(f"the model was trained on classes {classes} but {cfg.data.path} has "
                         f"{bundle.classes}; use data with the same class folders")
    return cfg, bundle
