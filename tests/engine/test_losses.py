"""Class weights and focal loss against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnmode.engine.losses import (Criterion, class_weights, classification_loss, distillation_loss, focal_loss,
                                   loss_kind, multilabel_loss, multilabel_weights)
from cnnmode.errors import UsageError

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]])
LABELS = torch.tensor([0, 0, 2])


def test_inverse_frequency_and_effective_number_weights():
    auto = class_weights("auto", [90, 9, 1], ["a", "b", "c"])
    raw = torch.tensor([1 / 90, 1 / 9, 1.0])
    assert torch.allclose(auto, raw / raw.mean())
    eff = class_weights("effective", [90, 9, 1], ["a", "b", "c"])
    e = torch.tensor([(1 - 0.999) / (1 - 0.999 ** n) for n in (90, 9, 1)])
    assert torch.allclose(eff, e / e.mean())
    assert class_weights("none", [1, 2], ["a", "b"]) is None


def test_weights_from_a_file(tmp_path):
    (tmp_path / "w.yaml").write_text("a: 1\nb: 3\n")
    assert torch.allclose(class_weights(str(tmp_path / "w.yaml"), [5, 5], ["a", "b"]), torch.tensor([0.5, 1.5]))
    with pytest.raises(UsageError, match="no weight for class"):
        class_weights(str(tmp_path / "w.yaml"), [5, 5, 5], ["a", "b", "c"])


def test_class_weights_change_the_loss_as_computed_by_hand():
    w = torch.tensor([0.5, 1.0, 2.0])
    logp = F.log_softmax(LOGITS, 1)
    by_hand = -(w[0] * logp[0, 0] + w[0] * logp[1, 0] + w[2] * logp[2, 2]) / (w[0] + w[0] + w[2])
    assert math.isclose(classification_loss(LOGITS, LABELS, "ce", weight=w).item(), by_hand.item(), rel_tol=1e-6)
    assert classification_loss(LOGITS, LABELS, "ce", weight=w).item() != classification_loss(LOGITS, LABELS).item()


def test_focal_loss_equals_the_formula():
    gamma = 2.0
    p = LOGITS.softmax(1)
    pt = torch.stack([p[i, y] for i, y in enumerate(LABELS.tolist())])
    by_hand = (-(1 - pt) ** gamma * pt.log()).mean()
    assert math.isclose(focal_loss(LOGITS, LABELS, gamma).item(), by_hand.item(), rel_tol=1e-6)
    assert math.isclose(focal_loss(LOGITS, LABELS, 0.0).item(), F.cross_entropy(LOGITS, LABELS).item(), rel_tol=1e-6)
    w = torch.tensor([0.5, 1.0, 2.0])
    wt = w[LABELS]
    weighted = (-(wt * (1 - pt) ** gamma * pt.log())).sum() / wt.sum()
    assert math.isclose(focal_loss(LOGITS, LABELS, gamma, w).item(), weighted.item(), rel_tol=1e-6)


def test_focal_loss_takes_soft_targets():
    soft = F.one_hot(LABELS, 3).float()
    assert math.isclose(focal_loss(LOGITS, soft, 2.0).item(), focal_loss(LOGITS, LABELS, 2.0).item(), rel_tol=1e-6)


def test_deferred_reweighting_switches_the_weights_on_late():
    from cnnmode.config import resolve_config

    cfg = resolve_config(overrides=["train.epochs=8", "train.reweight_from=0.75", "train.class_weights=auto"])
    w = torch.tensor([0.5, 1.5])
    criterion = Criterion.from_config(cfg, weights=w)
    on = []
    for epoch in range(1, 9):
        criterion.set_epoch(epoch)
        on.append(criterion.active_weights is not None)
    assert on == [False] * 6 + [True] * 2
    cfg.train.reweight_from = 0.0
    assert torch.equal(Criterion.from_config(cfg, weights=w).active_weights, w)


def test_distillation_pulls_towards_the_teacher():
    teacher = torch.nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    criterion = Criterion(teacher=teacher, alpha=1.0, temperature=2.0)
    with torch.no_grad():
        same = criterion(teacher(x), y, x)
        other = criterion(torch.randn(16, 3) * 3, y, x)
    assert same.item() == pytest.approx(0.0, abs=1e-5) and other.item() > 0.1
    half = Criterion(teacher=teacher, alpha=0.5, temperature=2.0)
    logits = torch.randn(16, 3)
    with torch.no_grad():
        expected = 0.5 * distillation_loss(logits, teacher(x), 2.0) + 0.5 * F.cross_entropy(logits, y)
        assert half(logits, y, x).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("key, value, attribute", [
    ("train.label_smoothing", 0.3, "label_smoothing"), ("train.focal_gamma", 3.5, "focal_gamma"),
    ("train.loss", "focal", "kind"), ("train.distill_temperature", 6.0, "temperature"),
    ("train.distill_alpha", 0.25, "alpha")])
def test_a_loss_setting_travels_from_the_command_line_to_the_criterion(key, value, attribute):
    """`cnnmode train KEY=VALUE` → the config → make_parts → the criterion train_one_epoch calls."""
    from cnnmode.cli.main import build_parser
    from cnnmode.config import pick_base, resolve_config
    from cnnmode.engine.device import pick_precision
    from cnnmode.engine.setup import make_parts

    args = build_parser().parse_args(["train", f"{key}={value}"])
    cfg = resolve_config(pick_base(args.recipe, args.config, "default"), args.overrides)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    cpu = torch.device("cpu")
    parts = make_parts(cfg, model, steps_per_epoch=4, device=cpu, precision=pick_precision("off", cpu))
    assert getattr(parts.criterion, attribute) == value


def test_label_smoothing_changes_the_loss_by_the_formula():
    smooth = Criterion(label_smoothing=0.3)(LOGITS, LABELS)
    assert math.isclose(smooth.item(), F.cross_entropy(LOGITS, LABELS, label_smoothing=0.3).item(), rel_tol=1e-6)
    assert smooth.item() != Criterion()(LOGITS, LABELS).item()


ML_LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
ML_TARGETS = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.uint8)


def test_multilabel_bce_is_summed_over_labels_and_averaged_over_images():
    want = F.binary_cross_entropy_with_logits(ML_LOGITS, ML_TARGETS.float(), reduction="sum") / 2
    assert multilabel_loss(ML_LOGITS, ML_TARGETS).item() == pytest.approx(want.item(), rel=1e-6)
    pos = torch.tensor([2.0, 1.0, 3.0])
    weighted = F.binary_cross_entropy_with_logits(ML_LOGITS, ML_TARGETS.float(), pos_weight=pos, reduction="sum") / 2
    assert multilabel_loss(ML_LOGITS, ML_TARGETS, pos_weight=pos).item() == pytest.approx(weighted.item(), rel=1e-6)
    smooth = F.binary_cross_entropy_with_logits(ML_LOGITS, ML_TARGETS.float() * 0.8 + 0.1, reduction="sum") / 2
    assert multilabel_loss(ML_LOGITS, ML_TARGETS, label_smoothing=0.2).item() == pytest.approx(smooth.item(), rel=1e-6)


def test_asymmetric_loss_reduces_to_bce_and_down_weights_easy_negatives():
    bce = multilabel_loss(ML_LOGITS, ML_TARGETS, "bce")
    assert multilabel_loss(ML_LOGITS, ML_TARGETS, "asl", gamma_neg=0, clip=0).item() == pytest.approx(bce.item(),
                                                                                                     rel=1e-5)
    # an easy negative (p = sigmoid(-2) = 0.12 for an absent label) costs less with gamma- = 4, nothing once clipped
    easy = torch.tensor([[-2.0]])
    absent = torch.zeros(1, 1, dtype=torch.uint8)
    assert multilabel_loss(easy, absent, "asl", gamma_neg=4, clip=0) < multilabel_loss(easy, absent, "bce") / 100
    assert multilabel_loss(easy, absent, "asl", gamma_neg=4, clip=0.2).item() == 0.0


def test_loss_must_fit_the_task_and_auto_picks_one():
    assert loss_kind("auto", True) == "bce" and loss_kind("auto", False) == "ce"
    with pytest.raises(UsageError, match="train.loss=focal is a softmax loss .* multi-label; choose one of: auto, bce, asl"):
        loss_kind("focal", True)
    with pytest.raises(UsageError, match="train.loss=asl is a sigmoid loss for label sets"):
        loss_kind("asl", False)


def test_multilabel_criterion_counts_exact_sets_and_weighs_rare_labels():
    crit = Criterion(kind="bce", multilabel=True)
    assert crit.hits(ML_LOGITS, ML_TARGETS).item() == 2
    assert crit.hits(ML_LOGITS, torch.tensor([[1, 1, 1], [0, 1, 0]], dtype=torch.uint8)).item() == 1
    weights, pos = multilabel_weights("auto", [90, 10], 100, ["a", "b"])
    assert weights is None and pos.tolist() == pytest.approx([10 / 90, 9.0])
