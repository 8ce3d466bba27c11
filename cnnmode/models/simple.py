"""Small nets for digits: SimpleCNN and LeNet-5."""
from __future__ import annotations

import torch.nn as nn

from cnnmode.models.api import MODELS


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + ReLU layers, 2x2 max-pool, dropout 0.25."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2), nn.Dropout(0.25))


@MODELS.register("simplecnn", help="SimpleCNN: 4 conv 3x3 in two blocks with max-pool, fc 128 (digits)")
def simplecnn(num_classes: int, in_channels: int = 1, stem: str = "cifar", width: int = 0,
              img_size: int = 0) -> nn.Module:
    w = width or 32
    return nn.Sequential(conv_block(in_channels, w), conv_block(w, 2 * w), nn.AdaptiveAvgPool2d(7),
                         nn.Flatten(), nn.Linear(2 * w * 49, 128), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(128, num_classes))


@MODELS.register("lenet5", help="LeNet-5 (LeCun 1998) with ReLU and max-pool")
def lenet5(num_classes: int, in_channels: int = 1, stem: str = "cifar", width: int = 0,
           img_size: int = 0) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(5), nn.Flatten(),
                         nn.Linear(16 * 25, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True),
                         nn.Linear(84, num_classes))
