"""Config text in and out: YAML (1.2-style scalars), dotted `key=value` overrides, type and choice checks.

Unknown keys and wrong types are errors that name the key and the valid choices; ints are accepted for float
keys, nothing else is coerced.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import yaml

from cnnmode.config.schema import SECTIONS, TOP_LEVEL, Config, all_keys
from cnnmode.errors import UsageError

# top-level keys a recipe may hold besides the config sections (they steer how the recipe resolves)
RECIPE_KEYS = ("on_cuda", "on_cpu", "base", "models", "fallback")


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


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping with a clear error for missing or malformed files."""
    try:
        data = load_yaml_text(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder; give a YAML file (a run folder's config.yaml, or your own)") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text YAML file") from None
    except yaml.YAMLError as e:
        raise UsageError(f"cannot parse YAML {path}: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    return data


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _coerce(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Check `value` against the field's type and choices; ints are accepted for floats, nothing else is coerced.
    A list key takes a YAML list or a comma-separated string (`run.trackers=mlflow,tensorboard`)."""
    if f.type in ("list[str]", list):
        return _coerce_list(key, value, f.metadata.get("choices"))
    want = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if want is str and value is None:
        value, ok = "", True
    if not ok:
        raise UsageError(f"{key} expects {want.__name__}, got {value!r} ({type(value).__name__})")
    if want is float and not math.isfinite(value):
        raise UsageError(f"{key} must be a finite number, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value


def _coerce_list(key: str, value: Any, choices: tuple[str, ...] | None) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{key} expects a list of names (a,b or [a, b]), got {value!r}")
    bad = [v for v in value if choices and v not in choices]
    if bad:
        raise UsageError(f"{key}: {', '.join(bad)} not valid; choose from: {', '.join(choices)}")
    return list(dict.fromkeys(value))


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key, validating name, type and choices."""
    if key in TOP_LEVEL:
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
    for key, value in flatten({k: v for k, v in tree.items() if k not in RECIPE_KEYS}).items():
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


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config from its `to_dict()` form (e.g. a run's config.yaml)."""
    cfg = Config()
    apply_dict(cfg, tree, "config")
    return cfg
