"""The batched policies against torchvision's per-image reference: each op gives the same pixels, and the draws
(which op, how strong) follow the same distributions (a chi-square test on op frequencies and a Kolmogorov-Smirnov
test per op on magnitudes, which are shown to fail when an op is dropped or its magnitude changed)."""
from __future__ import annotations

import functools

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cnnmode.config import AugConfig
from cnnmode.data.batch_ops import OPS, erase
from cnnmode.data.batch_policies import BatchPolicy, Slot, apply_plan, erasing_boxes
from cnnmode.data.loaders import TensorLoader

N = 2500
SAMPLES = {"trivialaugment": 20_000}  # 26 op-and-sign groups of uniform bins: a 15% change needs ~700 each
H = W = 32


def _images(n: int = 12, channels: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, H, W), dtype=torch.uint8, generator=gen)
    x[: n // 2] = (x[: n // 2] * 0.4 + 60).to(torch.uint8)  # low-contrast half: autocontrast/equalize matter
    return x


AA_CASES = [("ShearX", 0.3), ("ShearX", -0.99), ("ShearY", 0.2), ("TranslateX", 14.5), ("TranslateX", -9.7),
            ("TranslateY", -14.5), ("Rotate", 30.0), ("Rotate", -13.5), ("Rotate", 90.0), ("Rotate", 135.0),
            ("Brightness", 0.9), ("Brightness", -0.5), ("Color", 0.9), ("Color", -0.7), ("Contrast", 0.8),
            ("Contrast", -0.9), ("Sharpness", 0.9), ("Sharpness", 0.2), ("Sharpness", -0.9), ("Posterize", 4.0),
            ("Posterize", 2.0), ("Solarize", 0.5), ("Solarize", 0.0), ("AutoContrast", 0.0), ("Equalize", 0.0),
            ("Invert", 0.0)]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name,magnitude", AA_CASES)
def test_each_batched_op_gives_torchvisions_pixels(name, magnitude, channels):
    x, tv = _images(channels=channels), v2.AutoAugment()
    want = torch.stack([tv._apply_image_or_video_transform(img, name, magnitude, "nearest", tv._fill) for img in x])
    got = OPS[name](x, torch.tensor([[magnitude, 0.0, 0.0]] * len(x)))
    assert torch.equal(got, want)


@pytest.mark.parametrize("channels", [3, 1])
def test_a_plan_of_mixed_ops_gives_each_image_torchvisions_pixels(channels):
    """Geometric ops share one resampling and table ops one gather: every image must still get its own op."""
    cases = AA_CASES + [("Identity", 0.0)]
    x, tv = _images(2 * len(cases), channels), v2.AutoAugment()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1)) % len(cases)
    names, mags = [cases[i][0] for i in order], [cases[i][1] for i in order]
    want = torch.stack([tv._apply_image_or_video_transform(img, n, m, "nearest", tv._fill)
                        for img, n, m in zip(x, names, mags)])
    slot = Slot(torch.tensor([list(OPS).index(n) for n in names]),
                torch.tensor([[m, 0.0, 0.0] for m in mags]))
    assert torch.equal(apply_plan(x, [slot]), want)


def test_blur_affine_and_erase_give_torchvisions_pixels_with_a_parameter_per_image():
    x = _images(4)
    sigmas = torch.tensor([0.1, 0.7, 1.3, 2.0])
    want = torch.stack([F.gaussian_blur(img, [3, 3], [s.item()] * 2) for img, s in zip(x, sigmas)])
    assert torch.equal(OPS["Blur"](x, torch.stack([sigmas, sigmas * 0, sigmas * 0], 1)), want)
    params = torch.tensor([[3.0, -2.0, 0.9], [0.0, 5.0, 1.1], [-4.0, 0.0, 1.0], [1.0, 1.0, 0.8]])
    want = torch.stack([F.affine(img, angle=0.0, translate=[int(tx), int(ty)], scale=s.item(), shear=[0.0, 0.0])
                        for img, (tx, ty, s) in zip(x, params)])
    assert torch.equal(OPS["Affine"](x, params), want)
    boxes = torch.tensor([[1, 2, 5, 3], [0, 0, 0, 9], [20, 25, 12, 7], [4, 4, 1, 1]])
    want = torch.stack([F.erase(img, i, j, h, w, torch.zeros(1, 1, 1)) if h else img
                        for img, (i, j, h, w) in zip(x, boxes.tolist())])
    assert torch.equal(erase(x, boxes), want)


# what torchvision's per-image transforms draw, recorded as (op, magnitude) events per image

def _record_autoaugment_family(tv) -> tuple[v2.Transform, list]:
    events, inner = [], tv._apply_image_or_video_transform

    def spy(image, name, magnitude, **kw):
        if name != "Identity":
            events[-1].append((name, magnitude))
        return inner(image, name, magnitude, **kw)
    tv._apply_image_or_video_transform = spy
    return tv, events


def _record_params(tv, as_event) -> tuple[v2.Transform, list]:
    events, inner = [], tv.make_params

    def spy(flat):
        params = inner(flat)
        events[-1].extend(as_event(params))
        return params
    tv.make_params = spy
    return tv, events


@functools.lru_cache(maxsize=None)  # each sample is read by two tests
def _reference(kind: str) -> list[list[tuple[str, float]]]:
    torch.manual_seed(1)
    if kind in ("autoaugment", "randaugment", "trivialaugment"):
        tv, events = _record_autoaugment_family({"autoaugment": v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
                                                 "randaugment": v2.RandAugment(),
                                                 "trivialaugment": v2.TrivialAugmentWide()}[kind])
    elif kind == "rotation":
        tv, events = _record_params(v2.RandomRotation(20.0), lambda p: [("Rotate", p["angle"])])
    elif kind == "affine":
        tv, events = _record_params(v2.RandomAffine(0, translate=(0.2, 0.2), scale=(0.8, 1.2)),
                                    lambda p: [("Affine", float(p["translate"][0])),
                                               ("Affine-y", float(p["translate"][1])), ("Affine-scale", p["scale"])])
    elif kind == "blur":
        blur, rec = _record_params(v2.GaussianBlur(3, (0.1, 2.0)), lambda p: [("Blur", p["sigma"][0])])
        tv, events = v2.RandomApply([blur], p=0.4), rec
    else:
        tv, events = _record_params(v2.RandomErasing(p=0.6),
                                    lambda p: [("Erase", float(p["h"] * p["w"]))] if p["v"] is not None else [])
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    for _ in range(SAMPLES.get(kind, N)):
        events.append([])
        tv(image)
    return events


@functools.lru_cache(maxsize=None)
def _batched(kind: str) -> list[list[tuple[str, float]]]:
    gen = torch.Generator().manual_seed(2)
    if kind == "erasing":
        boxes = erasing_boxes(SAMPLES.get(kind, N), H, W, 0.6, gen)
        return [[("Erase", float(h * w))] if h else [] for _, _, h, w in boxes.tolist()]
    aug = AugConfig(**{"autoaugment": {"autoaugment": True}, "randaugment": {"randaugment": True},
                       "trivialaugment": {"trivialaugment": True}, "rotation": {"rotation": 20.0},
                       "affine": {"affine": 0.2}, "blur": {"blur": 0.4}}[kind])
    return _events(BatchPolicy(aug).plan(SAMPLES.get(kind, N), H, W, gen))


def _events(slots: list[Slot]) -> list[list[tuple[str, float]]]:
    out: list[list[tuple[str, float]]] = [[] for _ in range(len(slots[0].op))]
    for slot in slots:
        for i, (name, (m, y, s)) in enumerate(zip(slot.names(), slot.params.tolist())):
            if name == "Affine":
                out[i] += [("Affine", m), ("Affine-y", y), ("Affine-scale", s)]
            elif name != "Identity":
                out[i].append((name, m))
    return out


def _by_sign(sample: list[list]) -> list[list]:
    return [[(name + "-" if m < 0 else name, abs(m)) for name, m in evs] for evs in sample]


def same_distributions(ref: list[list], got: list[list], alpha: float = 1e-3) -> tuple[bool, str]:
    """(True, "") when the two samples of per-image events could come from one distribution: the same op
    frequencies (chi-square, an op's negative draws counted apart) and, for every op and sign, the same
    magnitudes (two-sample Kolmogorov-Smirnov on their sizes: a symmetric, signed range compared as one sample
    hides a change of scale)."""
    ref, got = _by_sign(ref), _by_sign(got)
    names = sorted({n for evs in ref + got for n, _ in evs})
    counts = [[sum(n == name for evs in side for n, _ in evs) for name in names] + [sum(not evs for evs in side)]
              for side in (ref, got)]
    counts = [[a, b] for a, b in zip(*counts) if a + b]
    p = stats.chi2_contingency(list(zip(*counts))).pvalue if len(counts) > 1 else 1.0
    if p < alpha:
        return False, f"op frequencies differ (p={p:.2g}): {counts}"
    for name in names:
        a = [m for evs in ref for n, m in evs if n == name]
        b = [m for evs in got for n, m in evs if n == name]
        if min(len(a), len(b)) >= 20 and (p := stats.ks_2samp(a, b).pvalue) < alpha / len(names):
            return False, f"{name} magnitudes differ (p={p:.2g})"
    return True, ""


KINDS = ["autoaugment", "randaugment", "trivialaugment", "rotation", "affine", "blur", "erasing"]


@pytest.mark.parametrize("kind", KINDS)
def test_batched_draws_follow_torchvisions_distributions(kind):
    ok, why = same_distributions(_reference(kind), _batched(kind))
    assert ok, why


@pytest.mark.parametrize("kind", ["autoaugment", "randaugment", "trivialaugment", "blur"])
def test_the_distribution_test_fails_when_an_op_is_dropped_or_weakened(kind):
    ref, got = _reference(kind), _batched(kind)
    for op in sorted({n for evs in got for n, m in evs if m != 0}):  # every op that has magnitudes
        dropped = [[e for e in evs if e[0] != op] for evs in got]
        weakened = [[(n, m * 1.15 if n == op else m) for n, m in evs] for evs in got]
        assert not same_distributions(ref, dropped)[0], f"dropping {op} went unnoticed"
        assert not same_distributions(ref, weakened)[0], f"{op}'s magnitudes x1.15 went unnoticed"


def test_grey_images_and_every_op_keep_shape_and_dtype_through_a_plan():
    aug = AugConfig(autoaugment=True, randaugment=True, trivialaugment=True, rotation=10, affine=0.1, blur=0.5)
    for channels in (1, 3):
        x = _images(64, channels)
        out = BatchPolicy(aug)(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)
    assert torch.equal(apply_plan(x, []), x)


@pytest.mark.parametrize("batched", [True, False])
def test_loader_runs_every_policy_on_both_paths(batched):
    aug = AugConfig(autoaugment=True, randaugment=True, rotation=10, affine=0.1, blur=0.3, random_erasing=0.5,
                    batched=batched)
    loader = TensorLoader(_images(40), torch.arange(40) % 4, 8, train=True, aug=aug, mean=[0.5] * 3,
                          std=[0.25] * 3, img_size=40, device=torch.device("cpu"), seed=0, num_classes=4)
    loader.set_epoch(1)
    batches = [x for x, _ in loader]
    assert len(batches) == 5 and batches[0].shape == (8, 3, 40, 40)
    if batched:  # drawn from the loader's seeded generator: an epoch replays exactly
        loader.set_epoch(1)
        assert all(torch.equal(a, b) for a, (b, _) in zip(batches, loader))
