"""The streamed loader: JPEGs decoded by torchvision, workers that stay up across epochs, and per-image policies
run batch-wise on the training device, reproducible by epoch and after a resume."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnmode.config import AugConfig
from cnnmode.data.augment import stream_transforms
from cnnmode.data.loaders import ImageFiles, StreamLoader, stream_workers

MEAN, STD = [0.5] * 3, [0.25] * 3


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    items = []
    for i in range(12):
        pixels = rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)
        path = root / f"{i}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        items.append((path, i % 3))
    return items


def _loader(items, aug: AugConfig, workers: int = 1) -> StreamLoader:
    device_side = aug.batched
    ds = ImageFiles(items, 3, stream_transforms(aug, 24, 3, MEAN, STD, True, device_side=device_side))
    return StreamLoader(ds, 4, train=True, aug=aug, device=torch.device("cpu"), workers=workers, seed=1,
                        num_classes=3, mean=MEAN, std=STD, device_side=device_side, channels_last=False)


def test_jpegs_are_decoded_by_torchvision_like_pil(jpegs):
    ds = ImageFiles(jpegs, 3, lambda x: x)
    ours = ds.decode(jpegs[0][0])
    with Image.open(jpegs[0][0]) as img:
        pil = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
    assert ours.dtype == torch.uint8 and ours.shape == pil.shape
    assert (ours.float() - pil.float()).abs().mean() < 1.0  # both libjpeg; the IDCTs may round apart
    grey = ImageFiles(jpegs, 1, lambda x: x).decode(jpegs[0][0])
    assert grey.shape[0] == 1


def test_the_policies_run_on_the_device_and_an_epoch_resumes_bit_for_bit(jpegs):
    aug = AugConfig(autoaugment=True, rotation=10, random_erasing=0.5)
    loader = _loader(jpegs, aug, workers=0)
    assert loader.batch_policy  # the workers hand over uint8 crops, policies run batch-wise here
    seen = []
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        seen.append([x for x, _ in loader])
        assert len(seen[-1]) == 3 and all(x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 for x in seen[-1])
    assert not torch.equal(seen[0][0], seen[1][0])  # a new epoch draws anew
    low, high = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert min(x.min() for x in seen[0]) >= low and max(x.max() for x in seen[0]) <= high  # normalised on device
    for batched in (True, False):
        aug = dataclasses.replace(aug, batched=batched)
        full = _loader(jpegs, aug, workers=0)
        full.set_epoch(3)
        reference = [x for x, _ in full]
        resumed = _loader(jpegs, aug, workers=0)
        resumed.set_epoch(3)
        resumed.resume({"epoch": 3, "position": 1})
        rest = [x for x, _ in resumed]
        assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, reference[1:]))


# DataLoader workers are forked, which is safe in a fresh process (as in training) but not inside a test worker
# that has started threads of its own: this check runs in a process of its own.
WORKERS_CHECK = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from test_stream_loader import AugConfig, _loader
items = [(p, i % 3) for i, p in enumerate(sorted(Path(sys.argv[2]).glob("*.jpg"), key=lambda p: int(p.stem)))]
aug = AugConfig(autoaugment=True, random_erasing=0.5)
two, one = _loader(items, aug, workers=2), _loader(items, aug, workers=0)
for epoch in (1, 2):
    two.set_epoch(epoch)
    one.set_epoch(epoch)
    a, b = [x for x, _ in two], [x for x, _ in one]
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b)), "workers changed the images"
    if epoch == 1:
        first = two.data_loader()
assert two.data_loader() is first and first.persistent_workers and first.prefetch_factor == 4
print("ok")
"""


def test_two_workers_stay_up_across_epochs_and_give_what_one_process_gives(jpegs):
    folder = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", WORKERS_CHECK, str(folder), str(jpegs[0][0].parent)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_workers_default_to_the_cores():
    assert 1 <= stream_workers(-1) <= 8 and stream_workers(0) == 0 and stream_workers(3) == 3
