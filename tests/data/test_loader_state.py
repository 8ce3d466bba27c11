"""Loaders under data parallelism and mid-epoch resume: the ranks' shards partition the single-process order,
and a loader resumed from its state yields exactly the batches an uninterrupted pass would."""
import dataclasses

import pytest
import torch

from cnnmode.config import AugConfig
from cnnmode.data.loaders import TensorLoader


def _loader(aug: AugConfig | None = None, **kw) -> TensorLoader:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 12, 12), dtype=torch.uint8, generator=gen)
    aug = aug or AugConfig(flip=True, crop_padding=2, cutout=4)
    return TensorLoader(images, torch.arange(50) % 5, 8, aug=aug, mean=[0.5] * 3, std=[0.2] * 3, img_size=12,
                        device=torch.device("cpu"), seed=3, num_classes=5, **kw)


def test_rank_shards_partition_every_global_batch():
    whole = _loader(train=True)
    order = whole.epoch_order(whole.generator())
    single = whole.index_batches(order)
    shards = [whole.sharded(r, 2).index_batches(order) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 50 // 8
    for i, batch in enumerate(single):
        assert torch.equal(torch.cat([shards[0][i], shards[1][i]]), batch)
    evaluation = _loader(train=False)
    parts = [evaluation.sharded(r, 2).index_batches(torch.arange(50)) for r in range(2)]
    seen = sorted(torch.cat([torch.cat(p) for p in parts]).tolist())
    assert seen == list(range(50))  # every image once, none twice


POLICIES = AugConfig(flip=True, crop_padding=2, autoaugment=True, rotation=10, random_erasing=0.3)


@pytest.mark.parametrize("aug", [None, POLICIES, dataclasses.replace(POLICIES, batched=False)],
                         ids=["batch-wide", "batched-policies", "per-image-policies"])
def test_a_resumed_loader_yields_the_rest_of_the_epoch_bit_for_bit(aug):
    """Batched policies run over chunks of several batches: resuming inside a chunk redraws that chunk alike.
    (torchvision's per-image transforms draw from the global generator, which a checkpoint saves and restores:
    done here by hand.)"""
    torch.manual_seed(5)
    full = _loader(aug, train=True)
    full.set_epoch(2)
    reference = [x for x, _ in full]
    torch.manual_seed(5)
    first = _loader(aug, train=True)
    first.set_epoch(2)
    it = iter(first)
    for _ in range(3):
        next(it)
    state, global_rng = first.state_dict(), torch.get_rng_state()
    assert state["epoch"] == 2 and state["position"] == 3
    torch.manual_seed(99)
    again = _loader(aug, train=True)
    again.set_epoch(2)
    again.resume(state)
    torch.set_rng_state(global_rng)
    rest = [x for x, _ in again]
    assert len(rest) == len(reference) - 3
    assert all(torch.equal(a, b) for a, b in zip(rest, reference[3:]))
    assert len([x for x, _ in again]) == len(reference)  # the next pass starts from the top again


def test_a_split_lives_on_the_device_only_when_it_fits_its_share_of_free_memory():
    from cnnmode.data.loaders import DEVICE_SHARE, fits_on_device, place_split
    assert fits_on_device(400, 1000) and not fits_on_device(401, 1000)
    assert fits_on_device(int(DEVICE_SHARE * 6e9), int(6e9)) and not fits_on_device(6_000_000_000, 8_000_000_000)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    assert place_split(images, torch.device("cpu")) is images  # nothing to place on the CPU
