"""FastNet: a small all-conv net for fast CIFAR-size training.

Design notes (from the published CIFAR-10 speed-run techniques, written here from scratch):
- a 2x2 patch-whitening first layer: filters are the eigenvectors of the training patches' covariance,
  scaled by 1/sqrt(eigenvalue), in +/- pairs, and frozen (`init_from_data`);
- three stages of conv3x3 → max-pool → BN → GELU → conv3x3 → BN → GELU, widths that suit AMX tiles;
  convs start as identity maps on their first input channels (Dirac init), BatchNorm keeps its scale fixed
  at 1 and only learns its shift, with fast-moving running statistics for short runs;
- a global max-pool and a bias-free linear head whose output is scaled down for a calmer start.
`fastnet-deep` has three convs per stage instead of two.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cnnmode.models.api import MODELS


def conv_bn(cin: int, cout: int) -> list[nn.Module]:
    """3x3 conv (no bias, Dirac-initialised) + shift-only BatchNorm + GELU."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(cin, cout)])
    norm = nn.BatchNorm2d(cout, momentum=0.4)
    norm.weight.requires_grad_(False)
    return [conv, norm, nn.GELU()]


class Stage(nn.Sequential):
    """conv → max-pool → BN → GELU, then `convs - 1` more conv → BN → GELU."""

    def __init__(self, cin: int, cout: int, convs: int = 2) -> None:
        first = conv_bn(cin, cout)
        rest = [layer for _ in range(convs - 1) for layer in conv_bn(cout, cout)]
        super().__init__(first[0], nn.MaxPool2d(2), *first[1:], *rest)


class FastNet(nn.Module):
    """Whitening stem + three conv stages + max-pool + linear."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, int, int] = (64, 256, 256),
                 patch: int = 2, head_scale: float = 1 / 9, convs: int = 2) -> None:
        super().__init__()
        stem_out = 2 * in_channels * patch * patch
        self.whiten = nn.Conv2d(in_channels, stem_out, patch, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        self.stages = nn.Sequential(Stage(stem_out, widths[0], convs), Stage(widths[0], widths[1], convs),
                                    Stage(widths[1], widths[2], convs))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.head_scale = head_scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen stem to whiten `patch x patch` patches of normalised training images."""
        k = self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * k * k).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        filters = (eigvecs.T / (eigvals + eps).sqrt()[:, None]).flip(0)
        filters = filters.reshape(-1, images.shape[1], k, k).float()
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.pool(self.stages(x)).flatten(1)
        return self.head(x) * self.head_scale


def _widths(width: int) -> tuple[int, int, int]:
    w = width or 64
    return w, 4 * w, 4 * w


@MODELS.register("fastnet", help="FastNet: whitening stem + 3 conv stages, built for fast CIFAR training")
def fastnet(num_classes: int, in_channels: int = 3, stem: str = "cifar", width: int = 0,
            img_size: int = 0) -> nn.Module:
    return FastNet(num_classes, in_channels, widths=_widths(width))


@MODELS.register("fastnet-deep", help="FastNet with three convs per stage instead of two (+36% FLOPs)")
def fastnet_deep(num_classes: int, in_channels: int = 3, stem: str = "cifar", width: int = 0,
                 img_size: int = 0) -> nn.Module:
    return FastNet(num_classes, in_channels, widths=_widths(width), convs=3)
