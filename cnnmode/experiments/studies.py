"""Ablation studies: each a list of settings (a label and the config keys it sets) built from the base config.

Built-in studies live in `STUDIES`; a YAML file gives a custom one, either as explicit
`settings: {label: {key: value}}` or as a `grid: {key: [values]}` product. This module stays free of torch and
matplotlib so `cnnmode --help` can list the studies quickly.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnnmode.config import Config, read_yaml
from cnnmode.errors import UsageError
from cnnmode.registry import Registry


@dataclass
class Setting:
    """One point of a study: a short label and the config keys it sets."""
    label: str
    keys: dict[str, Any] = field(default_factory=dict)


STUDIES: Registry[Callable[[Config], list[Setting]]] = Registry("study")


@STUDIES.register("optimizer", "sgd, adam, adamw, radam, muon at their usual learning rates")
def _optimizer(base: Config) -> list[Setting]:
    same = {"optim.bias_lr_scale": 1.0}
    sgd = same | {"optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 5e-4}
    return [Setting("sgd", sgd),
            Setting("adam", same | {"optim.name": "adam", "optim.lr": 1e-3, "optim.weight_decay": 0.0}),
            Setting("adamw", same | {"optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.05}),
            Setting("radam", same | {"optim.name": "radam", "optim.lr": 1e-3, "optim.weight_decay": 0.0}),
            Setting("muon", sgd | {"optim.name": "muon", "optim.muon_lr": 0.05})]  # conv filters; the rest as sgd


@STUDIES.register("batch_size", "batch 32, 64, 128, 256 with the learning rate scaled linearly")
def _batch_size(base: Config) -> list[Setting]:
    return [Setting(f"bs{bs}", {"train.batch_size": bs, "optim.lr": base.optim.lr * bs / base.train.batch_size})
            for bs in (32, 64, 128, 256)]


@STUDIES.register("image_size", "images resized to 32, 64, 80, 112 px")
def _image_size(base: Config) -> list[Setting]:
    return [Setting(f"{s}px", {"data.img_size": s}) for s in (32, 64, 80, 112)]


@STUDIES.register("augmentation", "none, flip, flip + AutoAugment, flip + AutoAugment + Cutout (half of "
                                  "data.img_size, 16 px when it is 0)")
def _augmentation(base: Config) -> list[Setting]:
    off = {"aug.flip": False, "aug.alternate_flip": False, "aug.crop_padding": 0, "aug.autoaugment": False,
           "aug.randaugment": False, "aug.trivialaugment": False, "aug.cutout": 0, "aug.random_erasing": 0.0,
           "aug.mixup": 0.0, "aug.cutmix": 0.0}
    size = base.data.img_size or 32
    return [Setting("none", off), Setting("flip", off | {"aug.flip": True}),
            Setting("autoaugment", off | {"aug.flip": True, "aug.autoaugment": True}),
            Setting("autoaugment+cutout", off | {"aug.flip": True, "aug.autoaugment": True, "aug.cutout": size // 2})]


@STUDIES.register("label_smoothing", "label smoothing 0, 0.05, 0.1, 0.15, 0.2")
def _label_smoothing(base: Config) -> list[Setting]:
    return [Setting(f"ls{v:g}", {"train.label_smoothing": v}) for v in (0.0, 0.05, 0.1, 0.15, 0.2)]


@STUDIES.register("scheduler", "constant, step (every third of training), cosine, onecycle")
def _scheduler(base: Config) -> list[Setting]:
    step = max(1, base.train.epochs // 3)
    return [Setting("constant", {"sched.name": "constant"}),
            Setting("step", {"sched.name": "step", "sched.step_size": step}),
            Setting("cosine", {"sched.name": "cosine"}), Setting("onecycle", {"sched.name": "onecycle"})]


@STUDIES.register("depth", "ResNet-18, -34, -50")
def _depth(base: Config) -> list[Setting]:
    return [Setting(name, {"model.name": name}) for name in ("resnet18", "resnet34", "resnet50")]


def _grid_label(keys: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in keys.items())


def load_study_file(path: Path) -> tuple[str, list[Setting]]:
    """A custom study from YAML: `settings: {label: {key: value, ...}}` or `grid: {key: [value, ...]}`."""
    tree = read_yaml(path)
    name = str(tree.get("name") or path.stem)
    if "settings" in tree:
        raw = tree["settings"]
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise UsageError(f"{path}: `settings` must map each label to a mapping of config keys")
        return name, [Setting(str(label), dict(keys)) for label, keys in raw.items()]
    if "grid" in tree:
        grid = tree["grid"]
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise UsageError(f"{path}: `grid` must map each config key to a non-empty list of values")
        points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        return name, [Setting(_grid_label(p), p) for p in points]
    raise UsageError(f"{path}: a study file needs `settings:` (label → keys) or `grid:` (key → values)")


def resolve_study(study: str, base: Config) -> tuple[str, list[Setting]]:
    """(name, settings) for a built-in study name or a study YAML file."""
    if study.endswith((".yaml", ".yml")) or Path(study).is_file():
        return load_study_file(Path(study))
    return study, STUDIES.get(study)(base)
