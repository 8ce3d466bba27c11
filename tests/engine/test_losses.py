"""Class weights and focal loss against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnmode.engine.losses import class_weights, classification_loss, focal_loss
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
    from cnnmode.engine.device import pick_precision
    from cnnmode.engine.setup import make_step_setup

    cfg = resolve_config(overrides=["train.epochs=8", "train.reweight_from=0.75", "train.class_weights=auto"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    w = torch.tensor([0.5, 1.5])
    setup = make_step_setup(cfg, opt, torch.device("cpu"), pick_precision("off", torch.device("cpu")), weights=w)
    on = []
    for epoch in range(1, 9):
        setup.weigh_epoch(epoch)
        on.append(setup.class_weights is not None)
    assert on == [False] * 6 + [True] * 2
    cfg.train.reweight_from = 0.0
    assert torch.equal(make_step_setup(cfg, opt, torch.device("cpu"), pick_precision("off", torch.device("cpu")),
                                       weights=w).class_weights, w)
