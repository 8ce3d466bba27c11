"""Multi-label metrics and per-label thresholds against hand-computed values and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnmode.engine.loop import score
from cnnmode.evaluation.metrics import fit_temperature
from cnnmode.evaluation.multilabel import fit_thresholds, label_sets, multilabel_metrics

LABELS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
PROBS = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.3], [0.7, 0.4, 0.1], [0.2, 0.1, 0.05]])


def test_thresholds_sit_midway_between_the_scores_they_separate():
    cuts = fit_thresholds(PROBS, LABELS)
    # label 0: positives 0.9, 0.7, negatives <= 0.2 → between 0.2 and 0.7; label 1: 0.8 and 0.4 vs 0.2 and 0.1
    assert cuts[0] == pytest.approx(0.45) and cuts[1] == pytest.approx(0.3) and cuts[2] == pytest.approx(0.45)
    assert fit_thresholds(PROBS, np.zeros_like(LABELS)) == [0.5, 0.5, 0.5]
    assert (label_sets(PROBS, cuts) == LABELS).all()


def test_metrics_of_label_sets():
    m = multilabel_metrics(LABELS, PROBS, ["a", "b", "c"], [0.5, 0.5, 0.5])
    # at 0.5 the third image misses label b: 3 of 4 sets exact, 1 of 12 label decisions wrong
    assert m["accuracy"] == m["subset_accuracy"] == pytest.approx(0.75)
    assert m["hamming_loss"] == pytest.approx(1 / 12)
    assert m["map"] == pytest.approx(1.0)  # every label's positives outrank its negatives
    assert m["per_label"]["b"] == pytest.approx({"ap": 1.0, "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2,
                                                 "threshold": 0.5, "ece": m["per_label"]["b"]["ece"]})
    assert m["no_label_images"] == 1 and m["labels_per_image"] == pytest.approx(1.25)
    # the empty set predicted for the empty image counts as right in the example-based F1
    assert m["f1_samples"] == pytest.approx((1 + 1 + 2 / 3 + 1) / 4)


def test_epoch_score_and_temperature_for_label_sets():
    logits = torch.logit(torch.tensor(PROBS, dtype=torch.float32))
    s = score(logits, torch.tensor(LABELS, dtype=torch.uint8))
    assert s["map"] == pytest.approx(1.0) and s["accuracy"] == pytest.approx(0.75)
    t = fit_temperature(logits * 4, torch.tensor(LABELS, dtype=torch.uint8))
    assert t > 1.2  # over-confident logits are softened
