"""The class-balanced sampler: classes drawn equally often, the same draw for the same (seed, epoch)."""
from __future__ import annotations

import torch

from cnnmode.config import AugConfig
from cnnmode.data import TensorLoader


def loader(balanced: bool, seed: int = 0) -> TensorLoader:
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    return TensorLoader(images, labels, 100, train=True, aug=AugConfig(flip=False, crop_padding=0), mean=[0.0],
                        std=[1 / 255], img_size=0, device=torch.device("cpu"), channels_last=False, seed=seed,
                        balanced=balanced)


def drawn(l: TensorLoader, epochs: int = 5) -> torch.Tensor:
    ys = []
    for epoch in range(epochs):
        l.set_epoch(epoch)
        ys += [y for _, y in l]
    return torch.cat(ys)


def test_balanced_sampler_draws_each_class_equally_often():
    freq = torch.bincount(drawn(loader(True)), minlength=3).float() / 5000
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.03), freq
    plain = torch.bincount(drawn(loader(False)), minlength=3).float() / 5000
    assert torch.allclose(plain, torch.tensor([0.9, 0.09, 0.01]), atol=0.005)


def test_balanced_order_is_replayed_exactly_for_a_seed_and_epoch():
    a, b = loader(True), loader(True)
    a.set_epoch(3)
    b.set_epoch(3)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    c = loader(True, seed=1)
    c.set_epoch(3)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
