import json

import pytest
import torch

from cnnmode.deploy.export import FORMATS, export
from cnnmode.deploy.predict import Predictor
from cnnmode.errors import UsageError
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def exported(trained_run):
    return export(str(trained_run), ["all"]), trained_run  # a run folder calibrates on its own validation split


def test_every_format_round_trips_with_parity(exported):
    results, run = exported
    assert [r["format"] for r in results] == list(FORMATS)
    for r in results:
        assert r["ok"] and r["verified_on"] == "real images"
        if FORMATS[r["format"]].quantized:
            assert r["top1_agreement"] >= 0.95
        else:
            assert r["top1_agreement"] == 1.0 and r["max_abs_logit_diff"] <= r["tolerance"]
    record = json.loads((run / "export" / "export.json").read_text())
    assert set(record) == set(FORMATS)
    meta = json.loads((run / "export" / "preprocess.json").read_text())
    assert meta["classes"] == ["circle", "square", "stripes"] and meta["img_size"] == 32


def test_exported_files_predict_like_the_artifact(exported, tiny_tree):
    _, run = exported
    reference = Predictor(run).predict([tiny_tree / "test"])
    for name in ("model.onnx", "model.ts"):
        other = Predictor(run / "export" / name).predict([tiny_tree / "test"])
        assert [p.label for p in other.predictions] == [p.label for p in reference.predictions]
        assert all(abs(a.confidence - b.confidence) < 1e-4 for a, b in zip(other.predictions, reference.predictions))


def test_dynamic_batch_axis(exported):
    _, run = exported
    pred = Predictor(run / "export" / "model.onnx")
    for n in (1, 5):
        assert pred.logits(torch.randn(n, 3, 32, 32)).shape == (n, 3)


def test_int8_is_smaller(exported):
    results, _ = exported
    size = {r["format"]: r["size_bytes"] for r in results}
    assert size["onnx-int8"] < size["onnx"] / 2


def test_exported_int8_has_7_bit_weights_that_run_right_on_any_x86(exported):
    from tests.deploy.test_runtime import _widest_int8_weight
    results, run = exported
    assert _widest_int8_weight(run / "export" / "model-int8.onnx") <= 64  # u8 x s7 pairs cannot saturate 16 bits
    assert next(r for r in results if r["format"] == "onnx-int8")["int8_weights"] == "7-bit (reduce_range)"


def test_parity_failure_keeps_no_file(trained_run, tmp_path, monkeypatch):
    from cnnmode.deploy import export as ex
    from cnnmode.errors import RunError

    def broken(art, path, opts):
        model = art.model
        with torch.no_grad():
            model[-1].weight.add_(1.0)  # sabotage: the file no longer matches the artifact
            torch.jit.trace(model, torch.randn(2, 3, 32, 32)).save(str(path))
            model[-1].weight.sub_(1.0)
    monkeypatch.setitem(ex.FORMATS, "torchscript", ex.Format(".ts", (), broken))
    with pytest.raises(RunError, match="does not match"):
        export(str(trained_run / "model.pt"), ["torchscript"], out_dir=str(tmp_path))
    assert not list(tmp_path.glob("*.ts")) and not list(tmp_path.glob(".tmp*"))


def test_bad_format_and_missing_calibration(trained_run, tmp_path):
    with pytest.raises(UsageError, match="choose from: torchscript, onnx, onnx-int8, int8"):
        export(str(trained_run), ["tflite"])
    with pytest.raises(UsageError, match="--calib-data"):
        export(str(trained_run / "model.pt"), ["onnx-int8"], out_dir=str(tmp_path))
    result = run_cli("export", str(trained_run / "model.pt"), "--format", "coreml")
    assert result.returncode == 2 and "unknown export format 'coreml'" in result.stderr
