"""Recipes and `resolve_config`: the one way every verb turns a recipe or YAML file plus overrides into a Config.

Precedence: dataclass defaults → recipe or YAML file → `key=value` overrides → values set by the caller.
"""
from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from cnnmode.config.parse import apply_dict, flatten, parse_override, read_yaml, set_key
from cnnmode.config.schema import Config
from cnnmode.errors import UsageError


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
    """True when `base` names a YAML file rather than a recipe."""
    return base.endswith((".yaml", ".yml")) or Path(base).is_file()


def pick_base(recipe: str | None, config_file: str | None, default: str | None = None) -> str | None:
    """The one base of a config from a `--recipe` and a `--config` option (never both)."""
    if recipe and config_file:
        raise UsageError("give either --recipe or --config, not both")
    return config_file or recipe or default


def _stderr_note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def resolve_config(base: str | None = None, overrides: Sequence[str] = (), values: dict[str, Any] | None = None,
                   cuda: bool | None = None, notice: Callable[[str], None] = _stderr_note) -> Config:
    """A validated Config: defaults → `base` → `key=value` `overrides` → `values` (dotted key → Python value).

    `base` is a recipe name, a YAML file (e.g. a run's config.yaml), or None for the defaults alone. Recipes that
    defer to the hardware (`default`) resolve for this machine unless `cuda` says otherwise. A recipe tuned for
    certain models (its `models:` list) hands over to its `fallback:` recipe, with a `notice`, when `model.name`
    names another model: its learning rates and regularisation would not train that one.
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
    from cnnmode.models import MODELS  # here, not at the top: `cnnmode --help` and `recipes` need no torch

    tuned_for = tree.get("models")
    MODELS.get(cfg.model.name)  # an unknown name is an error before any hand-over
    if tuned_for and tree.get("fallback") and cfg.model.name not in tuned_for:
        notice(f"recipe {base} is tuned for {', '.join(tuned_for)}; {cfg.model.name} trains with the "
               f"{tree['fallback']} recipe instead (with your other keys)")
        return resolve_config(tree["fallback"], overrides, values, cuda, notice)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks and name lookups, so bad input fails before any work starts."""
    from cnnmode.models import MODELS, check_qat_supported

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
        (0 <= cfg.train.distill_alpha <= 1, "train.distill_alpha must be in [0, 1]"),
        (cfg.train.distill_temperature > 0, "train.distill_temperature must be > 0"),
        (not cfg.train.unfreeze_at or cfg.model.freeze == "backbone",
         "train.unfreeze_at needs model.freeze=backbone"),
        (not cfg.train.unfreeze_at or cfg.sched.name in ("step", "constant", "plateau"),
         "train.unfreeze_at works with sched.name step, constant or plateau (onecycle/cosine fix the LR curve)"),
    ]
    if cfg.train.qat:
        check_qat_supported(cfg.model.name)
        checks.append((cfg.train.ema == 0, "train.qat=true does not combine with train.ema"))
        checks.append((cfg.model.freeze == "none", "train.qat=true trains every layer; use model.freeze=none"))
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if not str(cfg.data.path).strip():
        raise UsageError("data.path is empty; give a dataset name (cifar10, mnist, ...) or a folder/archive path")
