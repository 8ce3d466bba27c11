import torch

from cnnmode.config import AugConfig
from cnnmode.data.augment import alternating_flips, batch_crop, batch_cutout, batch_flip
from cnnmode.data.loaders import TensorLoader


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_mirrors_some_images_exactly():
    x = torch.arange(64 * 3 * 4 * 4, dtype=torch.float32).view(64, 3, 4, 4)
    out = batch_flip(x, gen())
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped ^ same).all() and 10 < flipped.sum() < 54


def test_crop_is_a_translation_of_the_padded_image():
    x = torch.rand(32, 3, 8, 8)
    out = batch_crop(x, 2, gen())
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(32):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(16, 3, 16, 16)
    out = batch_cutout(x, 4, gen())
    zeros = (out == 0).all(1)  # (N, H, W): same hole in every channel
    for i in range(16):
        ys, xs = torch.nonzero(zeros[i], as_tuple=True)
        assert 0 < len(ys) <= 16
        assert ys.max() - ys.min() < 4 and xs.max() - xs.min() < 4


def _loader(train=True, seed=0, aug=None):
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 3, 8, 8).contiguous()
    labels = torch.arange(40) % 5
    return TensorLoader(images, labels, 8, train=train, aug=aug or AugConfig(crop_padding=2), mean=[0.0] * 3,
                        std=[1 / 255] * 3, img_size=8, device=torch.device("cpu"), seed=seed, num_classes=5)


def test_loader_keeps_labels_aligned_and_shapes_dtypes():
    loader = _loader()
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape == (8, 3, 8, 8) and y.dtype == torch.long
        # each image is one constant value == its index, which reflect-padding keeps
        idx = x[:, 0, 0, 0].round().long()
        assert torch.equal(idx % 5, y)
        seen += idx.tolist()
    assert sorted(seen) == list(range(40))


def test_loader_is_deterministic_per_seed_and_epoch():
    a, b = _loader(seed=1), _loader(seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    b.set_epoch(4)
    assert not all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(a, b))


def test_eval_loader_is_ordered_and_unaugmented():
    loader = _loader(train=False)
    x = torch.cat([x for x, _ in loader])
    assert torch.equal(x[:, 0, 0, 0], torch.arange(40, dtype=torch.float32))


def test_policies_and_mix_run_on_batches():
    aug = AugConfig(autoaugment=True, randaugment=True, trivialaugment=True, cutout=2, random_erasing=0.5,
                    mixup=0.2)
    x, y = next(iter(_loader(aug=aug)))
    assert x.shape == (8, 3, 8, 8) and y.shape == (8, 5)  # soft labels from MixUp
    assert torch.allclose(y.sum(1), torch.ones(8))


def test_alternating_flips_complement_each_other_and_are_seeded():
    odd, even = alternating_flips(100, seed=3, epoch=1), alternating_flips(100, seed=3, epoch=2)
    assert torch.equal(odd, ~even) and torch.equal(odd, alternating_flips(100, seed=3, epoch=5))
    assert 20 < odd.sum() < 80 and not torch.equal(odd, alternating_flips(100, seed=4, epoch=1))


def test_loader_alternate_flip_mirrors_each_image_in_exactly_one_of_two_epochs():
    images = torch.zeros(40, 3, 4, 4, dtype=torch.uint8)
    images[:, :, :, 0] = torch.arange(1, 41, dtype=torch.uint8)[:, None, None]  # id in the left column
    aug = AugConfig(flip=True, alternate_flip=True, crop_padding=0)
    loader = TensorLoader(images, torch.arange(40) % 5, 8, train=True, aug=aug, mean=[0.0] * 3,
                          std=[1 / 255] * 3, img_size=4, device=torch.device("cpu"), seed=0, num_classes=5)
    flipped = {}
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        for x, y in loader:
            for img, label in zip(x, y):
                left, right = img[0, 0, 0].round().long().item(), img[0, 0, -1].round().long().item()
                ident = left or right
                assert (ident - 1) % 5 == label.item()  # labels stay with their images
                flipped.setdefault(ident, []).append(right > 0)
    assert len(flipped) == 40 and all(sorted(v) == [False, True] for v in flipped.values())


def test_batch_color_jitter_stays_in_range_and_greys_a_share():
    from cnnmode.data.augment import batch_color

    x = torch.rand(400, 3, 8, 8) * 255
    out = batch_color(x.clone(), 0.4, 0.0, gen())
    assert out.min() >= 0 and out.max() <= 255 and not torch.equal(out, x)
    ratio = out.mean((1, 2, 3)) / x.mean((1, 2, 3))  # brightness times contrast about the mean
    assert 0.5 < ratio.min() and ratio.max() < 1.5
    grey = batch_color(x.clone(), 0.0, 0.25, gen())
    is_grey = (grey[:, 0] == grey[:, 1]).flatten(1).all(1) & (grey[:, 1] == grey[:, 2]).flatten(1).all(1)
    assert 0.15 < is_grey.float().mean() < 0.35
    assert torch.equal(grey[~is_grey], x[~is_grey])
    one = torch.rand(4, 1, 8, 8) * 255
    assert batch_color(one, 0.3, 0.5, gen()).shape == one.shape


def test_geometric_and_colour_keys_reach_both_loaders():
    from cnnmode.data.augment import sample_policy, stream_transforms

    aug = AugConfig(rotation=15, affine=0.1, blur=0.5, color_jitter=0.3, grayscale=0.2)
    names = [type(t).__name__ for t in sample_policy(aug).transforms]
    assert names == ["RandomRotation", "RandomAffine", "RandomApply"]
    stream = [type(t).__name__ for t in stream_transforms(aug, 32, 3, [0.5] * 3, [0.2] * 3, True).transforms]
    assert {"ColorJitter", "RandomGrayscale", "Compose"} <= set(stream)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    loader = TensorLoader(x, torch.zeros(8, dtype=torch.long), 4, train=True, aug=aug, mean=[0.5] * 3,
                          std=[0.2] * 3, img_size=32, device=torch.device("cpu"), channels_last=False)
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (4, 3, 32, 32) and torch.isfinite(batches[0][0]).all()
