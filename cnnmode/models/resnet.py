"""ResNets from torchvision's builders, with a CIFAR stem (3x3 stride-1 conv, no max-pool) for small images."""
from __future__ import annotations

import torch.nn as nn
from torchvision import models as tvm

from cnnmode.models.api import MODELS


def make_resnet(builder, num_classes: int, in_channels: int, stem: str) -> nn.Module:
    """A torchvision ResNet with the requested stem and input channels. Each residual block's last BatchNorm
    starts at zero (torchvision's `zero_init_residual`), so a fresh net starts as a chain of identities: without
    it the residual stream of ResNet-101/152 grows with depth and the first steps see a loss of 60-70."""
    model = builder(num_classes=num_classes, zero_init_residual=True)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


def _register(depth: int) -> None:
    builder = getattr(tvm, f"resnet{depth}")

    @MODELS.register(f"resnet{depth}", help=f"ResNet-{depth} (torchvision; CIFAR or ImageNet stem)")
    def build(num_classes: int, in_channels: int = 3, stem: str = "cifar", width: int = 0,
              img_size: int = 0) -> nn.Module:
        return make_resnet(builder, num_classes, in_channels, stem)


for _depth in (18, 34, 50, 101, 152):
    _register(_depth)
