"""OpenVINO backends: the artifact's model converted to OpenVINO and compiled for its CPU plugin in fp32
(`openvino`), or quantized to int8 by NNCF's post-training quantization on real images (`openvino-int8`). The int8
model is saved beside the artifact (see `cache`), so later starts neither read calibration images nor calibrate.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
from typing import Callable

import torch

from cnnmode.artifact import Artifact
from cnnmode.deploy.cache import cached_path
from cnnmode.deploy.formats import example_batch
from cnnmode.deploy.quantize import quiet
from cnnmode.deploy.samples import Calibration
from cnnmode.engine.cpu import cpu_kind
from cnnmode.errors import UsageError

Forward = Callable[[torch.Tensor], torch.Tensor]
INT8_SCHEME = "mixed, first conv fp32, bias correction"  # part of a cached model's key: change it with the recipe


def _require(*packages: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise UsageError(f"the OpenVINO backends need {' and '.join(missing)}: pip install {' '.join(missing)}")


def convert(art: Artifact):
    """The artifact's model as an OpenVINO model with a dynamic batch axis."""
    import openvino as ov

    example = example_batch(art.preprocess, 1)
    with quiet(), torch.no_grad():
        model = ov.convert_model(art.model.float().eval(), example_input=example)
    model.reshape({0: ov.PartialShape([-1, *example.shape[1:]])})
    return model


def compiled_forward(model) -> Forward:
    """A function batch → fp32 logits running `model` on OpenVINO's CPU plugin with torch's thread count."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
              # OpenVINO would otherwise run the fp32 layers in bf16 on CPUs that have it (AMX, AVX-512 BF16)
              "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    lock = threading.Lock()  # one compiled model's default infer request serves one call at a time

    def run(x: torch.Tensor) -> torch.Tensor:
        with lock:
            return torch.from_numpy(compiled(x.detach().cpu().numpy())[0])
    return run


def openvino_fp32(art: Artifact) -> Forward:
    """The `openvino` backend."""
    _require("openvino")
    return compiled_forward(convert(art))


def quantize_int8(art: Artifact, images: torch.Tensor, batch_size: int = 32):
    """NNCF post-training int8 of the artifact's model calibrated on `images`: asymmetric activations (the MIXED
    preset), full bias correction, and the first convolution left in fp32 (it sees raw pixels; on the `speed` model
    these three took top-1 agreement with fp32 from 98.9% to 99.8%, at the same speed). On CPUs without VNNI every
    layer's weights get 7 bits (NNCF's overflow fix), as `cpu_kind` asks."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    model = convert(art)
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    batches = [b.numpy() for b in images.split(batch_size)]
    fix = nncf.OverflowFix.ENABLE if cpu_kind().int8_reduce_range else nncf.OverflowFix.DISABLE
    with quiet(), contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
        return nncf.quantize(model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.MIXED,
                             subset_size=len(batches), fast_bias_correction=False,
                             ignored_scope=nncf.IgnoredScope(names=convs[:1]),
                             advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix))


def openvino_int8(art: Artifact, calib: Calibration) -> Forward:
    """The `openvino-int8` backend: the cached int8 model when there is one for this artifact, calibration images
    and CPU kind, else one quantized now and cached."""
    _require("openvino", "nncf")
    import nncf
    import openvino as ov

    path = cached_path(art, "openvino-int8", calib.key, f"reduce_range={cpu_kind().int8_reduce_range}", INT8_SCHEME,
                       ov.__version__, nncf.__version__, suffix=".xml")
    if path is not None and path.exists() and path.with_suffix(".bin").exists():
        return compiled_forward(ov.Core().read_model(path))
    model = quantize_int8(art, calib.images)
    if path is not None:
        _save(model, path)
    return compiled_forward(model)


def _save(model, path) -> None:
    """Write the IR pair atomically: weights first, then the .xml that marks the pair complete."""
    import openvino as ov

    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        ov.save_model(model, tmp, compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written costs the next start a calibration, nothing more
        pass
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)
