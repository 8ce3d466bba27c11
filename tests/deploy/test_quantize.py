import importlib.util

import pytest
import torch

from cnnmode.artifact import load_artifact
from cnnmode.deploy import quantize
from cnnmode.deploy.samples import calibration_images, sample_images
from cnnmode.errors import UsageError
from cnnmode.rundir import resolve_target


def test_x86_int8_matches_fp32_on_test_images(trained_run):
    where = resolve_target(trained_run)
    art = load_artifact(where)
    calib = calibration_images(where, art, None, 64)
    images, _ = sample_images(where, art, None, 64, "test")
    run = quantize.quantize_x86(art.model, calib, batch_size=16)
    with torch.no_grad():
        reference = art.model.float().eval()(images)
    for batch in (images[:1], images[:8], images):  # new batch sizes recompile; all must agree
        out = run(batch)
        assert out.dtype == torch.float32 and out.shape == reference[:len(batch)].shape
        assert (out.argmax(1) == reference[:len(batch)].argmax(1)).float().mean() >= 0.9
    assert (run(images) - reference).abs().max() < 0.25 * reference.abs().max()


def test_x86_int8_without_torchao_names_the_package(trained_run, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(UsageError, match="pip install torchao"):
        quantize.quantize_x86(load_artifact(trained_run).model, torch.zeros(2, 3, 32, 32))
