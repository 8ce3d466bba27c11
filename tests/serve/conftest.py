import pytest

from cnnmode import train
from cnnmode.config import resolve_config
from tests.conftest import fast_overrides


@pytest.fixture(scope="package")
def served_run(tiny_tree, tmp_path_factory):
    """A small trained run (SimpleCNN, 3 classes, 32 px) for the server tests."""
    tmp = tmp_path_factory.mktemp("serve")
    return train(resolve_config(overrides=fast_overrides(tmp, tiny_tree, **{"train.epochs": 2, "run.name": "s"})),
                 quiet=True)
