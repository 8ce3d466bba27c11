import random

import numpy as np
import pytest
import torch

from cnnmode.engine.callbacks import EarlyStopping
from cnnmode.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cnnmode.errors import UsageError
from cnnmode.files import atomic_torch_save


def test_atomic_save_leaves_only_the_file(tmp_path):
    atomic_torch_save({"x": torch.ones(3)}, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "a.pt"
    atomic_torch_save({"x": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_rng_roundtrip_through_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", value=1)
    expected = (torch.rand(3), np.random.rand(), random.random())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.random.rand() == expected[1] and random.random() == expected[2]
    assert set(rng_state()) >= {"python", "numpy", "torch"}


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def test_early_stopping_counts_epochs_without_gain():
    stop = EarlyStopping(patience=2, min_delta=0.01)
    assert [stop.update(v) for v in (0.5, 0.6, 0.605, 0.6, 0.7)] == [False, False, False, True, False]
    assert EarlyStopping(patience=0).update(0.0) is False
