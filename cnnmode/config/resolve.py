"""Recipes and `resolve_config`: the one way every verb turns a recipe or YAML file plus overrides into a Config.

Precedence: dataclass defaults → recipe or YAML file → `key=value` overrides → values set by the caller.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Callable, Sequence

from cnnmode.config.parse import apply_dict, flatten, parse_override, read_yaml, set_key
from cnnmode.config.schema import Config
from cnnmode.errors import UsageError


MIN_IMG_SIZE = 16  # the smallest side every built-in model can take (LeNet-5 and FastNet pool three times)
MAX_NAME = 120  # characters in run.name


def _recipe_files() -> dict[str, Path]:
    folder = importlib.resources.files("cnnmode") / "recipes"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def list_recipes() -> dict[str, str]:
    """Recipe name → one-line description."""
    return {name: (read_yaml(path).get("description", "") or "").strip()
            for name, path in sorted(_recipe_files().items())}


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


def is_config_file(base: str) -> bool:
    """True when `base` names a YAML file (or at least a path) rather than a recipe."""
    return base.endswith((".yaml", ".yml")) or Path(base).is_file() or "/" in base or "\\" in base


def pick_base(recipe: str | None, config_file: str | None, default: str | None = None) -> str | None:
    """The one base of a config from a `--recipe` and a `--config` option (never both)."""
    if recipe and config_file:
        raise UsageError("give either --recipe or --config, not both")
    return config_file or recipe or default


def _print_note(message: str) -> None:
    print(f"note: {message}")  # with the run's other progress lines; stderr is for the one-line errors


def resolve_config(base: str | None = None, overrides: Sequence[str] = (), values: dict[str, Any] | None = None,
                   cuda: bool | None = None, notice: Callable[[str], None] = _print_note,
                   lookups: bool = True) -> Config:
    """A validated Config: defaults → `base` → `key=value` `overrides` → `values` (dotted key → Python value).

    `base` is a recipe name, a YAML file (e.g. a run's config.yaml), or None for the defaults alone. Recipes that
    defer to the hardware (`default`) resolve for this machine unless `cuda` says otherwise. A recipe tuned for
    certain models (its `models:` list) hands over to its `fallback:` recipe, with a `notice`, when `model.name`
    names another model: its learning rates and regularisation would not train that one. `lookups=False` skips
    the checks that need the model registry (and so torch).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    tree: dict[str, Any] = {}
    if base and is_config_file(base):
        tree, source = read_yaml(Path(base)), str(base)
    elif base:
        tree, source = recipe_tree(base, cuda), f"recipe {base}"
    cfg = Config()
    if tree:
        apply_dict(cfg, tree, source)
    for text in overrides:
        set_key(cfg, *parse_override(text))
    for key, value in flatten(values or {}).items():
        set_key(cfg, key, str(value) if isinstance(value, Path) else value)
    tuned_for = tree.get("models")
    if lookups:
        from cnnmode.models import MODELS  # here, not at the top: `cnnmode --help` and `recipes` need no torch

        MODELS.get(cfg.model.name)  # an unknown name is an error before any hand-over
    if tuned_for and tree.get("fallback") and cfg.model.name not in tuned_for:
        handed = resolve_config(tree["fallback"], overrides, values, cuda, notice, lookups)
        notice(f"recipe {base} is tuned for {', '.join(tuned_for)}; {cfg.model.name} trains with the "
               f"{tree['fallback']} recipe instead (with your other keys)")
        return handed
    validate(cfg, lookups)
    return cfg


def check_early(base: str | None, overrides: Sequence[str]) -> None:
    """Refuse a bad key, value or combination in one line before torch is imported (the command line calls this
    first, so a typo is answered at once). A recipe that depends on the hardware is tried both ways: only a
    setting that fails on either is refused here; the rest is left to `resolve_config`."""
    first = None
    for cuda in (False, True):
        try:
            resolve_config(base, overrides, cuda=cuda, notice=lambda message: None, lookups=False)
            return
        except UsageError as e:
            first = first or e
    raise first


def validate(cfg: Config, lookups: bool = True) -> None:
    """Cross-field checks and (with `lookups`) model name lookups, so bad input fails before any work starts."""
    if lookups:
        from cnnmode.models import MODELS

        MODELS.get(cfg.model.name)
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.accum_steps >= 1, "train.accum_steps must be >= 1"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (0 <= cfg.data.val_split < 1, "data.val_split must be in [0, 1)"),
        (0 <= cfg.data.calib_split < 0.5, "data.calib_split must be in [0, 0.5)"),
        (0 < cfg.data.test_split < 1, "data.test_split must be in (0, 1)"),
        (cfg.data.subset >= 0, "data.subset must be >= 0"),
        (cfg.data.folds == 0 or cfg.data.folds >= 2, "data.folds must be 0 (off) or >= 2"),
        (cfg.data.folds == 0 or 0 <= cfg.data.fold < cfg.data.folds, "data.fold must be in [0, data.folds)"),
        (cfg.data.channels in (0, 1, 3), "data.channels must be 0, 1 or 3"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (0 <= cfg.train.ema < 1, "train.ema must be in [0, 1)"),
        (cfg.train.focal_gamma >= 0, "train.focal_gamma must be >= 0"),
        (0 <= cfg.train.reweight_from < 1, "train.reweight_from must be in [0, 1)"),
        (cfg.train.checkpoint_every_steps >= -1, "train.checkpoint_every_steps must be >= 0 (0 = epoch ends only) "
                                                 "or -1 (auto)"),
        (cfg.run.threads >= 0, "run.threads must be >= 0 (0 = the default)"),
        (cfg.train.keep_checkpoints >= 0 and cfg.train.save_every >= 0,
         "train.keep_checkpoints and train.save_every must be >= 0 (0 = off)"),
        (cfg.train.class_weights in ("none", "auto", "effective") or Path(cfg.train.class_weights).is_file(),
         f"train.class_weights={cfg.train.class_weights!r}: give none, auto, effective, or an existing .json/.yaml "
         "file of {class: weight}"),
        (cfg.data.img_size == 0 or cfg.data.img_size >= MIN_IMG_SIZE,
         f"data.img_size must be 0 (the data's own size) or >= {MIN_IMG_SIZE}"),
        (cfg.train.eval_batch_size >= 1, "train.eval_batch_size must be >= 1"),
        (cfg.sched.step_size >= 1, "sched.step_size must be >= 1"),
        (0 < cfg.sched.pct_start < 1, "sched.pct_start must be in (0, 1)"),
        (cfg.sched.gamma > 0, "sched.gamma must be > 0"),
        (cfg.sched.plateau_patience >= 0, "sched.plateau_patience must be >= 0"),
        (cfg.sched.warmup_epochs >= 0, "sched.warmup_epochs must be >= 0"),
        (cfg.model.width >= 0, "model.width must be >= 0 (0 = the model's default)"),
        (cfg.data.workers >= -1, "data.workers must be >= 0, or -1 for one per core"),
        (cfg.data.max_file_mb > 0 and cfg.data.max_total_gb > 0, "data.max_file_mb and data.max_total_gb must be > 0"),
        (cfg.optim.momentum >= 0 and cfg.optim.muon_momentum >= 0, "optim.momentum and optim.muon_momentum must be >= 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (cfg.optim.bias_lr_scale > 0 and cfg.optim.muon_lr > 0, "optim.bias_lr_scale and optim.muon_lr must be > 0"),
        (cfg.train.grad_clip >= 0, "train.grad_clip must be >= 0 (0 = off)"),
        (cfg.train.early_stop_patience >= 0, "train.early_stop_patience must be >= 0 (0 = off)"),
        (cfg.train.progressive_size >= 0, "train.progressive_size must be >= 0 (0 = off)"),
        (0 < cfg.train.progressive_fraction <= 1, "train.progressive_fraction must be in (0, 1]"),
        (cfg.train.freeze_stem_after >= 0 and cfg.train.unfreeze_at >= 0,
         "train.freeze_stem_after and train.unfreeze_at must be >= 0 (0 = never)"),
        (cfg.train.tta_translate >= 0, "train.tta_translate must be >= 0"),
        (min(cfg.aug.crop_padding, cfg.aug.cutout) >= 0, "aug.crop_padding and aug.cutout must be >= 0"),
        (0 <= cfg.aug.random_erasing <= 1, "aug.random_erasing is a probability in [0, 1]"),
        (min(cfg.aug.mixup, cfg.aug.cutmix) >= 0, "aug.mixup and aug.cutmix must be >= 0"),
        (0 <= cfg.aug.color_jitter < 1, "aug.color_jitter must be in [0, 1)"),
        (0 <= cfg.aug.grayscale <= 1 and 0 <= cfg.aug.blur <= 1, "aug.grayscale and aug.blur are probabilities "
                                                                  "in [0, 1]"),
        (0 <= cfg.aug.rotation <= 180, "aug.rotation must be in [0, 180] degrees"),
        (0 <= cfg.aug.affine < 1, "aug.affine must be in [0, 1)"),
        (0 <= cfg.train.distill_alpha <= 1, "train.distill_alpha must be in [0, 1]"),
        (cfg.train.distill_temperature > 0, "train.distill_temperature must be > 0"),
        (cfg.model.freeze in ("none", "backbone") or cfg.model.freeze.startswith("until:") and cfg.model.freeze[6:],
         f"model.freeze={cfg.model.freeze!r}: choose none, backbone, or until:LAYER"),
        (not cfg.train.unfreeze_at or cfg.model.freeze != "none",
         "train.unfreeze_at needs model.freeze=backbone or until:LAYER"),
        (not cfg.train.unfreeze_at or cfg.sched.name in ("step", "constant", "plateau"),
         "train.unfreeze_at works with sched.name step, constant or plateau (onecycle/cosine fix the LR curve)"),
    ]
    if cfg.train.qat and lookups:
        from cnnmode.models import check_qat_supported

        check_qat_supported(cfg.model.name)
    if cfg.train.qat:
        checks.append((cfg.train.ema == 0, "train.qat=true does not combine with train.ema"))
        checks.append((cfg.model.freeze == "none", "train.qat=true trains every layer; use model.freeze=none"))
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if not str(cfg.data.path).strip():
        raise UsageError("data.path is empty; give a dataset name (cifar10, mnist, ...) or a folder/archive path")
    check_run_name(cfg.run.name)
    check_for_size(cfg, cfg.data.img_size)


def check_run_name(name: str) -> None:
    """A run folder name is one plain folder name inside run.dir: no path separators, no `..`, not too long."""
    if name and ("/" in name or "\\" in name or name in (".", "..") or len(name) > MAX_NAME):
        raise UsageError(f"run.name={name[:40]!r}{'...' if len(name) > 40 else ''} must be one folder name of at "
                         f"most {MAX_NAME} characters, without / or \\ or .. (the run goes to run.dir/run.name)")


def check_for_size(cfg: Config, img_size: int) -> None:
    """Settings that must fit inside the images (0 = size not known yet): refused before any training, not after."""
    if not img_size:
        return
    for key, value in (("aug.cutout", cfg.aug.cutout), ("aug.crop_padding", cfg.aug.crop_padding)):
        if value > img_size:
            raise UsageError(f"{key}={value} is larger than the {img_size} px images")
    if cfg.train.tta and cfg.train.tta_translate >= img_size:
        raise UsageError(f"train.tta_translate={cfg.train.tta_translate} must be smaller than the {img_size} px "
                         "images it shifts")
