"""The runtime registry: every backend behind one interface, exported files on their own runtimes."""
import pytest
import torch

from cnnmode.artifact import load_artifact
from cnnmode.deploy.runtime import BACKENDS, load_runner
from cnnmode.deploy.samples import calibration_images, sample_images
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
    assert agree >= (0.75 if backend.startswith("int8") else 1.0)


def test_int8_backends_need_calibration_images(loaded):
    with pytest.raises(UsageError, match="calibrates on real images"):
        load_runner(loaded[0], "int8-x86")


def test_unknown_backend_lists_the_registry(loaded):
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'; choose one of: compile, eager"):
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
