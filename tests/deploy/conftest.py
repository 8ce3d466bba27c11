import pytest

from cnnmode import train
from cnnmode.config import resolve_config
from tests.conftest import fast_overrides


@pytest.fixture(scope="package")
def trained_run(tiny_tree, tmp_path_factory):
    """A small trained run (SimpleCNN, 3 classes, 32 px) shared by the deploy tests."""
    tmp = tmp_path_factory.mktemp("deploy")
    return train(resolve_config(overrides=fast_overrides(tmp, tiny_tree, **{"train.epochs": 3, "run.name": "d"})),
                 quiet=True)
