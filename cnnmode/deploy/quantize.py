"""Static int8 for x86 CPUs through PyTorch's PT2E flow: torch.export → X86InductorQuantizer (torchao) →
calibrate on real images → convert → torch.compile with freezing, which lowers the quantized convolutions to
oneDNN's VNNI/AMX int8 kernels. In-process only: the compiled model is not a file (use `onnx-int8` to ship)."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from typing import Callable, Iterator

import torch
import torch.nn as nn

from cnnmode.engine.cpu import cpu_kind
from cnnmode.errors import UsageError

# torch logs these at WARNING on every use: torchao's enum registration, and the CUDA-less compiler check
_NOISY_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Python warnings and torch's noisy loggers for the duration."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def quantize_x86(model: nn.Module, calib: torch.Tensor, batch_size: int = 64) -> Callable[[torch.Tensor], torch.Tensor]:
    """A compiled int8 version of `model` (eval, fp32) calibrated on `calib` (normalised images, NCHW).

    Returns a function batch → fp32 logits; the first call of each new batch size compiles (seconds)."""
    if importlib.util.find_spec("torchao") is None:
        raise UsageError("the x86 int8 backend needs torchao: pip install torchao")
    with quiet():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    # 7-bit activations where the CPU lacks VNNI: its 16-bit int8 sums would saturate (see `cpu_kind`)
    scheme = x86.get_default_x86_inductor_quantization_config(reduce_range=cpu_kind().int8_reduce_range)
    quantizer = x86.X86InductorQuantizer().set_global(scheme)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad(), quiet():
        # strict export: the non-strict graph's in-place ops break the quantizer's conv-add-relu matching
        graph = torch.export.export(model.float().eval(), (calib[:2],), dynamic_shapes=({0: batch},),
                                    strict=True).module()
        prepared = prepare_pt2e(graph, quantizer)
        for chunk in calib.split(batch_size):
            prepared(chunk)
        compiled = torch.compile(convert_pt2e(prepared))

    compiled_shapes: set[torch.Size] = set()

    def run(x: torch.Tensor) -> torch.Tensor:
        # freezing makes the int8 weights constants, which is what lets inductor pick the oneDNN int8 kernels
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            if x.shape in compiled_shapes:
                return compiled(x).float()
            with quiet():  # a new shape may compile
                out = compiled(x).float()
            compiled_shapes.add(x.shape)
            return out
    return run
