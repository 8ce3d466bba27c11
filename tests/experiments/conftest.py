"""A base config file for experiment verbs: the seconds-long tiny-data run of `fast_overrides`."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import fast_overrides


@pytest.fixture
def base_yaml(tmp_path, tiny_tree) -> Path:
    """A config YAML (the --base of ablate/search/cv) for 1-epoch SimpleCNN runs on the tiny tree."""
    tree: dict = {}
    for text in fast_overrides(tmp_path, tiny_tree, **{"train.epochs": 1}):
        key, value = text.split("=", 1)
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path
