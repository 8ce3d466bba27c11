"""The unknown-image score's arithmetic: percentiles against held-out images, thresholds, the --reject choices and
a damaged file, on hand-made numbers."""
import pytest
import torch

from cnnmode.errors import UsageError
from cnnmode.unknowns import Rejector, from_state, knn_score, msp_score, reject_threshold, unknowns_path


def _rejector(score: str = "combined") -> Rejector:
    held = {"msp": torch.linspace(0.0, 0.5, 11),  # -log of the top probability "knn": torch.linspace(0.0, 1.0, 11),
            "combined": torch.linspace(-1.0, 1.0, 11)}
    index = torch.nn.functional.normalize(torch.eye(4)[:3], dim=1).half()
    return Rejector(score, held, {"msp": (0.25, 0.1), "knn": (0.5, 0.2)}, 0.9, 1, index)


def test_a_score_is_the_share_of_held_out_images_below_it():
    r = _rejector("msp")
    assert r.percentile("msp", torch.tensor([-1.0, 0.07, 0.26, 9.0])).tolist() == pytest.approx([0, 2 / 11, 6 / 11, 1])


def test_judge_uses_the_stored_score_and_falls_back_to_max_softmax_without_features():
    r = _rejector()
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]]).log()
    near, far = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1.0]])  # on an index row / orthogonal
    assert knn_score(near, r.index, 1).item() == pytest.approx(0, abs=1e-3)
    assert knn_score(far, r.index, 1).item() == pytest.approx(1, abs=1e-3)
    score, unknown = r.judge(probs, torch.cat([near, far]), 0.9)
    assert unknown.tolist() == [False, True] and score[1] == 1
    msp_only, _ = r.judge(probs, None, 0.9)
    assert msp_only.tolist() == pytest.approx(r.percentile("msp", msp_score(probs)).tolist())


def test_reject_choices():
    r = _rejector()
    assert reject_threshold("off", None, None) is None and reject_threshold(None) is None
    assert reject_threshold("auto", None, r) == 0.9 and reject_threshold("auto", 0.8, r) == 0.8
    assert reject_threshold("0.97", None, r) == 0.97
    for bad, says in (("maybe", "choose auto, off or a threshold"), ("1.5", "between 0 and 1")):
        with pytest.raises(UsageError, match=says):
            reject_threshold(bad, None, r)
    with pytest.raises(UsageError, match="--coverage"):
        reject_threshold("auto", 1.2, r)
    with pytest.raises(UsageError, match="cnnmode calibrate RUN"):
        reject_threshold("auto", None, None)


def test_the_exported_state_keeps_max_softmax_only_and_a_damaged_one_is_refused(tmp_path):
    r = from_state(_rejector().state(with_index=False), "preprocess.json")
    assert r.score == "msp" and r.index is None and not r.needs_features
    state = _rejector().state()
    del state["index"]
    with pytest.raises(UsageError, match="not a fitted unknown-image score; refit it with `cnnmode calibrate"):
        from_state(state, "x.unknowns.pt")
    assert unknowns_path(tmp_path / "model.pt") == tmp_path / "model.unknowns.pt"
