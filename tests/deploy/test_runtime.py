"""The runtime registry: every backend behind one interface, exported files on their own runtimes."""
import json

import pytest
import torch

from cnnmode.artifact import load_artifact
from cnnmode.deploy.runtime import BACKENDS, CALIBRATED, auto_backend, load_runner, open_runner
from cnnmode.deploy.samples import Calibration, calibration_images, sample_images
from cnnmode.errors import UsageError
from cnnmode.rundir import resolve_target


@pytest.fixture(scope="module")
def loaded(trained_run):
    where = resolve_target(trained_run)
    art = load_artifact(where)
    images, _ = sample_images(where, art, None, 48, "test")
    return art, images, calibration_images(where, art, None, 64)


@pytest.mark.parametrize("backend", BACKENDS.names())
def test_every_backend_gives_logits_that_agree_with_eager(loaded, backend):
    art, images, calib = loaded
    runner = load_runner(art, backend, "cpu", calib)
    logits = runner(images[:8])
    reference = art.model.float().eval()(images[:8]).detach()
    assert runner.backend == backend and runner.classes == art.classes and runner.preprocess == art.preprocess
    assert logits.dtype == torch.float32 and logits.device.type == "cpu" and logits.shape == reference.shape
    agree = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agree >= (0.75 if backend in CALIBRATED else 1.0)


def test_int8_backends_need_calibration_images(loaded):
    with pytest.raises(UsageError, match="calibrates on real images"):
        load_runner(loaded[0], "int8-x86")


def test_unknown_backend_lists_the_registry(loaded):
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'; choose one of: auto, compile, eager"):
        load_runner(loaded[0], "tensorrt")


def test_exported_file_runs_on_its_own_runtime_only(trained_run, tmp_path):
    from cnnmode.deploy.export import export
    [result] = export(str(trained_run), ["torchscript"], out_dir=str(tmp_path))
    runner = load_runner(result["file"])
    assert runner.backend == "torchscript" and runner.classes == ["circle", "square", "stripes"]
    with pytest.raises(UsageError, match="runs only on torchscript"):
        load_runner(result["file"], "onnxruntime")


def _widest_int8_weight(path) -> int:
    import onnx
    from onnx import numpy_helper
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return max(int(abs(w.astype(int)).max()) for w in weights)


@pytest.mark.parametrize("vnni", [True, False])
def test_onnx_int8_range_follows_the_cpu_in_process(loaded, vnni, monkeypatch):
    """Without VNNI, ONNX Runtime's u8 x s8 products saturate in 16 bits: the in-process int8 backend quantizes
    weights to 7 bits there (reduce_range), and to the full 8 where VNNI accumulates in 32 bits."""
    from cnnmode.deploy import runtime
    from cnnmode.engine.cpu import CpuKind
    art, _, calib = loaded
    written = []
    real = runtime.write_onnx_int8

    def keep(art, path, opts):
        real(art, path, opts)
        written.append(_widest_int8_weight(path))
    monkeypatch.setattr(runtime, "cpu_kind", lambda: CpuKind(True, vnni, vnni, vnni, False))
    monkeypatch.setattr(runtime, "write_onnx_int8", keep)
    load_runner(art, "int8", "cpu", calib)
    assert (written[0] > 64) if vnni else (written[0] <= 64)


def test_openvino_int8_is_cached_beside_the_artifact_and_read_back_without_calibrating(loaded, tmp_path):
    import shutil
    art, images, calib = loaded
    shutil.copy(art.path, tmp_path / "model.pt")  # a fresh folder: no cache yet
    art = load_artifact(tmp_path / "model.pt")
    reads = []

    def read():
        reads.append(1)
        return calib
    first = load_runner(art, "openvino-int8", "cpu", Calibration("run:here:64", read))
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert reads == [1] and [p.rsplit(".", 1)[1] for p in cached] == ["bin", "xml"]
    again = load_runner(art, "openvino-int8", "cpu", Calibration("run:here:64", read))
    assert reads == [1]  # the second start read no calibration image
    assert torch.equal(first(images), again(images))
    load_runner(art, "openvino-int8", "cpu", Calibration("data:other:64", read))
    assert reads == [1, 1] and len(list((tmp_path / "cache").iterdir())) == 4  # other images: another model


def test_auto_takes_the_first_usable_backend_of_this_cpu_kinds_row(monkeypatch, tmp_path):
    from cnnmode.deploy import runtime
    from cnnmode.engine.cpu import cpu_kind
    table = tmp_path / "table.json"
    table.write_text(json.dumps({cpu_kind().name: {"order": ["openvino-int8", "not-a-backend", "onnxruntime"]}}))
    monkeypatch.setattr(runtime, "AUTO_TABLE", table)
    assert auto_backend("cpu", True)[0] == "openvino-int8"
    assert auto_backend("cpu", False)[0] == "onnxruntime"  # no images to calibrate on
    monkeypatch.setitem(runtime.NEEDS, "onnxruntime", ("no_such_package",))
    assert auto_backend("cpu", False)[0] == "eager"  # nothing installed: eager
    assert auto_backend("meta", True)[0] == "eager"  # not a CPU
    table.write_text("{}")
    backend, why = auto_backend("cpu", True)
    assert backend == "eager" and "no measured row" in why


def test_auto_on_a_run_folder_says_what_it_chose(trained_run):
    runner, _ = open_runner(resolve_target(trained_run), "auto")
    assert runner.backend in BACKENDS.names()
    assert runner.describe().startswith(f"backend {runner.backend} on cpu (auto")  # auto device: no GPU here
