"""A small vision transformer for 32 px images (patch 4: 64 tokens), written here: patch embedding by a strided
convolution, a class token, learned positions, pre-norm encoder blocks, a linear head."""
from __future__ import annotations

import torch
import torch.nn as nn

from cnnmode.errors import UsageError
from cnnmode.models.api import MODELS


class SmallViT(nn.Module):
    """ViT with `depth` pre-norm blocks of width `dim` on `patch`-pixel patches."""

    def __init__(self, num_classes: int, in_channels: int = 3, img_size: int = 32, patch: int = 4, dim: int = 192,
                 depth: int = 6, heads: int = 3, mlp_ratio: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if img_size % patch or dim % heads:
            raise UsageError(f"vit-small needs data.img_size divisible by its patch size {patch} (got {img_size}) "
                             f"and model.width divisible by its {heads} heads (got {dim})")
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (img_size // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens))[:, 0])


@MODELS.register("vit-small", help="small ViT for 32 px images: patch 4, 6 blocks of width 192, 3 heads (written here)")
def vit_small(num_classes: int, in_channels: int = 3, stem: str = "cifar", width: int = 0,
              img_size: int = 0) -> nn.Module:
    return SmallViT(num_classes, in_channels, img_size or 32, dim=width or 192)
