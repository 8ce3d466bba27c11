"""The one config object. Defaults live only here.

Precedence: dataclass defaults → recipe or `--config` YAML → dotted `key=value` overrides.
Unknown keys and wrong types are errors that name the key and the valid choices.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnmode.errors import UsageError


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its `--help` text and, for names, the valid choices."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    path: str = opt("cifar10", "cifar10, cifar100, mnist, fashion-mnist, a class-folder tree, or a .tar/.tar.gz/.zip of one")
    root: str = opt("./data", "where named datasets live or download to; caches go under <root>/cache")
    img_size: int = opt(0, "side length images are resized to (0 = the data's own size for small images, 224 otherwise)")
    val_split: float = opt(0.1, "fraction of train held out for validation (stratified, seeded)")
    test_split: float = opt(0.2, "fraction held out as test when the data has no test/ or val/ folder")
    folds: int = opt(0, "K-fold cross-validation: cut train into this many stratified folds and validate on "
                     "data.fold (replaces data.val_split; 0 = off)")
    fold: int = opt(0, "with data.folds: the fold (0-based) held out for validation")
    subset: float = opt(0.0, "use only this many (>= 1) or this fraction (< 1) of each split, stratified; 0 = all")
    channels: int = opt(0, "image channels fed to the model: 1, 3, or 0 = 1 for all-grayscale data, else 3")
    workers: int = opt(2, "DataLoader worker processes for large images streamed from disk")


@dataclass
class ModelConfig:
    name: str = opt("resnet18", "registry name (see `cnnmode models`)")
    stem: str = opt("auto", "ResNet stem: cifar (3x3 conv, no max-pool), imagenet, or auto (cifar below 64 px)",
                    ("auto", "cifar", "imagenet"))
    pretrained: str = opt("", "weights file or artifact to start from (head replaced if class counts differ)")
    freeze: str = opt("none", "none, or backbone to train the classifier head only", ("none", "backbone"))
    width: int = opt(0, "base channel width for models that take one (0 = the model's default)")


@dataclass
class OptimConfig:
    name: str = opt("sgd", "optimizer; muon = Muon (orthogonalised momentum) for conv filters, SGD for the rest",
                    ("sgd", "adam", "adamw", "radam", "muon"))
    lr: float = opt(0.1, "peak learning rate")
    weight_decay: float = opt(5e-4, "weight decay (decoupled for adamw)")
    momentum: float = opt(0.9, "SGD momentum")
    nesterov: bool = opt(True, "SGD Nesterov momentum")
    bias_lr_scale: float = opt(1.0, "learning-rate factor for biases and normalisation parameters")
    muon_lr: float = opt(0.05, "muon: peak learning rate of the conv filters (relative to their norm)")
    muon_momentum: float = opt(0.6, "muon: Nesterov momentum of the conv filters")


@dataclass
class SchedConfig:
    name: str = opt("onecycle", "learning-rate schedule", ("onecycle", "cosine", "step", "plateau", "constant"))
    warmup_epochs: float = opt(0.0, "linear warm-up length for cosine (onecycle uses pct_start)")
    pct_start: float = opt(0.25, "onecycle: fraction of steps spent rising to the peak")
    step_size: int = opt(5, "step: epochs between decays")
    gamma: float = opt(0.1, "step/plateau: decay factor")
    plateau_patience: int = opt(3, "plateau: epochs without validation gain before decaying")


@dataclass
class AugConfig:
    flip: bool = opt(True, "random horizontal flip")
    alternate_flip: bool = opt(False, "with flip: mirror each image on alternate epochs (a random half in the "
                               "first) instead of by a fresh coin each epoch; small in-memory images only")
    crop_padding: int = opt(4, "pad-and-random-crop padding in pixels (0 = off)")
    autoaugment: bool = opt(False, "AutoAugment with the CIFAR10 policy")
    randaugment: bool = opt(False, "RandAugment")
    trivialaugment: bool = opt(False, "TrivialAugmentWide")
    cutout: int = opt(0, "Cutout square side in pixels (0 = off)")
    random_erasing: float = opt(0.0, "RandomErasing probability (0 = off)")
    mixup: float = opt(0.0, "MixUp alpha (0 = off)")
    cutmix: float = opt(0.0, "CutMix alpha (0 = off)")


@dataclass
class TrainConfig:
    epochs: int = opt(10, "training epochs")
    batch_size: int = opt(128, "images per optimizer step (before accumulation)")
    eval_batch_size: int = opt(512, "images per evaluation batch")
    accum_steps: int = opt(1, "gradient accumulation steps per optimizer step")
    grad_clip: float = opt(0.0, "clip gradient norm to this value (0 = off)")
    label_smoothing: float = opt(0.0, "label smoothing for cross-entropy")
    amp: str = opt("auto", "mixed precision: auto (bf16 on capable CPUs, fp16 on CUDA), off, bf16, fp16",
                   ("auto", "off", "bf16", "fp16"))
    channels_last: bool = opt(True, "channels-last memory format")
    compile: bool = opt(False, "torch.compile the model")
    progressive_size: int = opt(0, "progressive resizing: train the first epoch at this image size, growing to "
                                "data.img_size over train.progressive_fraction of the epochs (0 = off)")
    progressive_fraction: float = opt(0.5, "fraction of the epochs over which progressive resizing grows the size")
    freeze_stem_after: int = opt(0, "stop training the first conv layer after this many epochs, which also skips "
                                 "its backward (FastNet: the whitening stem's bias; its filters never train) "
                                 "(0 = never)")
    ema: float = opt(0.0, "exponential moving average of weights, decay per step (0 = off); evaluation uses it")
    tta: bool = opt(False, "flip test-time augmentation at evaluation")
    tta_translate: int = opt(0, "with tta: also average over images shifted by +/- this many pixels at the final "
                             "evaluation (per-epoch validation uses flips only, to stay cheap)")
    early_stop_patience: int = opt(0, "stop after this many epochs without validation gain (0 = off)")
    early_stop_min_delta: float = opt(0.0, "minimum validation-accuracy gain that counts as progress")
    target_accuracy: float = opt(0.0, "report time_to_target_s: training time until validation accuracy first "
                                     "reaches this (without a validation split: the final test accuracy) (0 = off)")
    distill_teacher: str = opt("", "artifact or run folder of a teacher to distil from (KL + CE); empty = off")
    distill_temperature: float = opt(4.0, "distillation softmax temperature")
    distill_alpha: float = opt(0.7, "weight of the distillation (KL) term; 1 - alpha weighs cross-entropy")
    unfreeze_at: int = opt(0, "with model.freeze=backbone: unfreeze every layer after this epoch (0 = never)")
    unfreeze_lr_scale: float = opt(0.1, "learning-rate factor applied when the backbone unfreezes")
    qat: bool = opt(False, "quantization-aware training (fp32 with fake int8); also writes an int8 TorchScript")
    profile: bool = opt(False, "profile a few training steps with torch.profiler (trace in the run folder)")
    seed: int = opt(0, "random seed")
    deterministic: bool = opt(False, "deterministic algorithms (bitwise-reproducible on CPU)")


@dataclass
class RunConfig:
    dir: str = opt("runs", "parent folder of run folders")
    name: str = opt("", "run folder name (default <recipe or model>-<timestamp>)")
    device: str = opt("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    tensorboard: bool = opt(False, "also write TensorBoard events")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    recipe: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what `config.yaml` holds)."""
        return dataclasses.asdict(self)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory))
_TOP_LEVEL = ("recipe", "description")


def all_keys() -> dict[str, dataclasses.Field]:
    """Every dotted key with its dataclass field (for help text and validation)."""
    keys = {}
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(Config(), section)):
            keys[f"{section}.{f.name}"] = f
    return keys


class _Loader(yaml.SafeLoader):
    """YAML with 1.2-style scalars: `off`/`yes` stay strings, `1e-3` is a float (PyYAML's 1.1 rules differ)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def load_yaml_text(text: str) -> Any:
    """Parse YAML with the rules above."""
    return yaml.load(text, Loader=_Loader)


def _coerce(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Check `value` against the field's type and choices; ints are accepted for floats, nothing else is coerced."""
    want = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if want is str and value is None:
        value, ok = "", True
    if not ok:
        raise UsageError(f"{key} expects {want.__name__}, got {value!r} ({type(value).__name__})")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key, validating name, type and choices."""
    if key in _TOP_LEVEL:
        setattr(cfg, key, "" if value is None else str(value))
        return
    fields = all_keys()
    if key not in fields:
        section = key.split(".")[0]
        valid = [k for k in fields if k.startswith(section + ".")] or list(SECTIONS)
        raise UsageError(f"unknown config key '{key}'; valid keys: {', '.join(valid)}")
    section, name = key.split(".", 1)
    setattr(getattr(cfg, section), name, _coerce(key, value, fields[key]))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 3}} → {'train.epochs': 3}."""
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def apply_dict(cfg: Config, tree: dict[str, Any], source: str) -> None:
    """Apply a nested dict (from YAML) onto cfg."""
    if not isinstance(tree, dict):
        raise UsageError(f"{source}: expected a mapping of config sections, got {type(tree).__name__}")
    for key, value in flatten(tree).items():
        if key in ("on_cuda", "on_cpu"):
            continue
        try:
            set_key(cfg, key, value)
        except UsageError as e:
            raise UsageError(f"{source}: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.01' → ('optim.lr', 0.01) with YAML scalar typing."""
    if "=" not in text:
        raise UsageError(f"override '{text}' must look like key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml_text(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)):
        value = raw
    return key.strip(), value


# ---- recipes -------------------------------------------------------------------------------------------------

def _recipe_files() -> dict[str, Path]:
    folder = importlib.resources.files("cnnmode") / "recipes"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def list_recipes() -> dict[str, str]:
    """Recipe name → one-line description."""
    return {name: (read_yaml(path).get("description", "") or "").strip()
            for name, path in sorted(_recipe_files().items())}


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping with a clear error for missing or malformed files."""
    try:
        data = load_yaml_text(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"cannot parse YAML {path}: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    return data


def recipe_tree(name: str, cuda: bool = False) -> dict[str, Any]:
    """A recipe's YAML; a recipe with `on_cpu`/`on_cuda` (like `default`) defers to the one for the hardware, and
    one with `base: NAME` (like `speed-small`) is that recipe with its own keys laid on top."""
    files = _recipe_files()
    if name not in files:
        raise UsageError(f"unknown recipe '{name}'; choose one of: {', '.join(sorted(files))}")
    tree = read_yaml(files[name])
    target = tree.get("on_cuda" if cuda else "on_cpu")
    if target:
        return recipe_tree(target, cuda) | {"recipe": name}
    if "base" in tree:
        tree = _merged(recipe_tree(tree.pop("base"), cuda), tree)
    return tree | {"recipe": name}


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid onto `base` key by key, sections merged rather than replaced."""
    out = dict(base)
    for key, value in over.items():
        both_sections = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both_sections else value
    return out


def build_config(recipe: str | None = None, config_file: str | None = None,
                 overrides: list[str] | tuple[str, ...] = (), cuda: bool = False) -> Config:
    """Resolve defaults → recipe or YAML file → overrides into one validated Config."""
    if recipe and config_file:
        raise UsageError("give either --recipe or --config, not both")
    cfg = Config()
    if recipe:
        apply_dict(cfg, recipe_tree(recipe, cuda), f"recipe {recipe}")
    if config_file:
        apply_dict(cfg, read_yaml(Path(config_file)), str(config_file))
    for text in overrides:
        set_key(cfg, *parse_override(text))
    validate(cfg)
    return cfg


def config_from_base(base: str | None, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None,
                     cuda: bool | None = None) -> Config:
    """A Config from `base` (a recipe name or a YAML file; default: the `default` recipe for this machine's
    hardware), then `key=value` override strings, then `values` (dotted key → Python value, set as they are)."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    base = base or "default"
    is_file = base.endswith((".yaml", ".yml")) or Path(base).is_file()
    cfg = build_config(None if is_file else base, base if is_file else None, overrides, cuda)
    if values:
        for key, value in flatten(values).items():
            set_key(cfg, key, str(value) if isinstance(value, Path) else value)
        validate(cfg)
    return cfg


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config from its `to_dict()` form (e.g. a run's config.yaml)."""
    cfg = Config()
    apply_dict(cfg, tree, "config")
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks and name lookups, so bad input fails before any work starts."""
    from cnnmode.models import MODELS

    MODELS.get(cfg.model.name)
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.accum_steps >= 1, "train.accum_steps must be >= 1"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (0 <= cfg.data.val_split < 1, "data.val_split must be in [0, 1)"),
        (0 < cfg.data.test_split < 1, "data.test_split must be in (0, 1)"),
        (cfg.data.subset >= 0, "data.subset must be >= 0"),
        (cfg.data.folds == 0 or cfg.data.folds >= 2, "data.folds must be 0 (off) or >= 2"),
        (cfg.data.folds == 0 or 0 <= cfg.data.fold < cfg.data.folds, "data.fold must be in [0, data.folds)"),
        (cfg.data.channels in (0, 1, 3), "data.channels must be 0, 1 or 3"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (0 <= cfg.train.ema < 1, "train.ema must be in [0, 1)"),
        (cfg.data.img_size >= 0, "data.img_size must be >= 0"),
    ]
    checks += [
        (0 <= cfg.train.distill_alpha <= 1, "train.distill_alpha must be in [0, 1]"),
        (cfg.train.distill_temperature > 0, "train.distill_temperature must be > 0"),
        (not cfg.train.unfreeze_at or cfg.model.freeze == "backbone",
         "train.unfreeze_at needs model.freeze=backbone"),
        (not cfg.train.unfreeze_at or cfg.sched.name in ("step", "constant", "plateau"),
         "train.unfreeze_at works with sched.name step, constant or plateau (onecycle/cosine fix the LR curve)"),
    ]
    if cfg.train.qat:
        from cnnmode.engine.qat import check_supported

        check_supported(cfg.model.name)
        checks.append((cfg.train.ema == 0, "train.qat=true does not combine with train.ema"))
        checks.append((cfg.model.freeze == "none", "train.qat=true trains every layer; use model.freeze=none"))
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if not str(cfg.data.path).strip():
        raise UsageError("data.path is empty; give a dataset name (cifar10, mnist, ...) or a folder/archive path")


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
