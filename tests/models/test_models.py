import pytest
import torch

from cnnmode.models import build_model, list_models, resolve_stem
from cnnmode.errors import UsageError

EXPECTED_PARAMS_M = {"resnet18": 11.17, "resnet34": 21.28, "resnet50": 23.52, "resnet101": 42.51,
                     "resnet152": 58.16, "simplecnn": 0.47, "lenet5": 0.062, "fastnet": 1.97,
                     "fastnet-deep": 3.19, "vit-small": 1.81}
OWN = [n for n in list_models() if not n.startswith("tv:")]  # the torchvision ones: tests/models/test_more_models.py


@pytest.mark.parametrize("name", OWN)
def test_model_builds_runs_and_has_expected_size(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3, stem="cifar")
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(EXPECTED_PARAMS_M[name], rel=0.01)


def test_every_model_has_an_expected_size():
    assert set(OWN) == set(EXPECTED_PARAMS_M)


def test_resnet_stems():
    cifar = build_model("resnet18", 10, stem="cifar")
    imagenet = build_model("resnet18", 10, stem="imagenet")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, torch.nn.MaxPool2d)
    assert resolve_stem("auto", 32) == "cifar" and resolve_stem("auto", 224) == "imagenet"


@pytest.mark.parametrize("name", ["resnet18", "simplecnn", "lenet5", "fastnet"])
def test_grayscale_input_channels(name):
    model = build_model(name, 4, in_channels=1, stem="cifar")
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)


def test_fastnet_whitening_init_decorrelates_patches():
    torch.manual_seed(0)
    model = build_model("fastnet", 10)
    base = torch.randn(64, 1, 16, 16)
    images = torch.cat([base, base * 0.9 + 0.1 * torch.randn_like(base), torch.randn(64, 1, 16, 16)], 1)
    model.init_from_data(images)
    feats = model.whiten(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(feats.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.15)  # whitened: unit variance, no correlation
    assert not model.whiten.weight.requires_grad


def test_unknown_model_lists_choices():
    with pytest.raises(UsageError, match="resnet50"):
        build_model("vgg16", 10)


def test_speed_recipe_model_trains_and_starts_near_identity():
    from cnnmode.config import resolve_config

    cfg = resolve_config("speed")
    model = build_model(cfg.model.name, 10, width=cfg.model.width)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6 == pytest.approx(3.19, rel=0.01)
    assert len([m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]) == 1 + 3 * 3  # stem + 3 per stage
    conv = model.stages[0][0]
    assert torch.equal(conv.weight[:24, :, 1, 1], torch.eye(24))  # Dirac init on the first input channels
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not n.weight.requires_grad and n.bias.requires_grad for n in norms)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), torch.arange(4))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
