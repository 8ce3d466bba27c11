"""Every model of CNN Mode's own trains with the default recipe (the torchvision `tv:` builders are tested in
tests/models/test_more_models.py): a model other than the recipe's own gets settings
that suit it (the recipe hands over to `generic`), never the FastNet learning rates that collapse a ResNet."""
import json

import pytest

from cnnmode import train
from cnnmode.config import resolve_config
from cnnmode.models import list_models
from tests.conftest import CIFAR, cifar_slice, write_tree


@pytest.fixture(scope="module")
def shapes16(tmp_path_factory):
    """600 images of 3 classes at 16 px, no test folder (the data carves 20% as its test split)."""
    return write_tree(tmp_path_factory.mktemp("shapes16") / "shapes", {"": 200}, size=16)


# resnet34, resnet101 and resnet152 are resnet18's and resnet50's builders with more blocks (their sizes are
# checked in tests/models): a minute and a half of CI time for no path of their own
@pytest.mark.parametrize("model", [m for m in list_models() if not m.startswith("tv:")
                                   and m not in ("resnet34", "resnet101", "resnet152")])
def test_default_recipe_trains_every_model_beyond_chance(model, shapes16, tmp_path):
    cfg = resolve_config("default", [f"model.name={model}", f"data.path={shapes16}", f"data.root={tmp_path}",
                                     f"run.dir={tmp_path / 'runs'}", "train.epochs=2"], cuda=False)
    run = train(cfg, quiet=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.5, f"{model} with recipe {cfg.recipe}: {metrics['test']['accuracy']}"


@pytest.mark.skipif(not CIFAR.exists(), reason="the shared CIFAR-10 JPEG copy is not on this machine")
def test_default_recipe_trains_resnet18_on_a_cifar_slice(tmp_path):
    # with the speed recipe's FastNet settings (LR 0.375, 64x bias LR, label smoothing 0.3) ResNet-18 stays at
    # chance here (10.2% after 2 epochs on 1,000 images); the generic recipe it now hands over to reaches 25%
    data = cifar_slice(tmp_path / "cifar", {"train": 110, "test": 50})
    cfg = resolve_config("default", ["model.name=resnet18", f"data.path={data}", f"data.root={tmp_path}",
                                     "train.epochs=2", "data.img_size=16", f"run.dir={tmp_path / 'runs'}"],
                         cuda=False)
    assert cfg.recipe == "generic"
    run = train(cfg, quiet=True)
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.18
