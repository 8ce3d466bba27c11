"""Export formats: one small writer per format in a table (file suffix, packages it needs, the parity it must
reach). `export` wraps each with the same verify-and-report step; the runtime registry reuses the writers."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cnnmode.artifact import Artifact
from cnnmode.errors import UsageError


def example_batch(preprocess: dict, n: int = 2) -> torch.Tensor:
    """Random images of the model's input shape (for tracing and exporting)."""
    return torch.randn(n, preprocess["channels"], preprocess["img_size"], preprocess["img_size"])


@dataclass
class Format:
    """An export format: file suffix, packages it needs, the writer, and the parity it must reach."""
    suffix: str
    needs: tuple[str, ...]
    write: Callable[[Artifact, Path, "ExportOptions"], None]
    min_agreement: float = 1.0
    quantized: bool = False


@dataclass
class ExportOptions:
    dynamic_batch: bool = True
    opset: int = 18
    calib: torch.Tensor | None = None  # normalised real images, for calibration and verification
    # static int8 with 7-bit weights, whose u8 x s7 sums cannot saturate on x86 CPUs without VNNI: what a file that
    # may run anywhere needs (`export`); an in-process runtime sets it by this CPU (`cpu_kind`)
    int8_reduce_range: bool = True


def write_torchscript(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """Traced TorchScript (fp32)."""
    with torch.no_grad():
        traced = torch.jit.trace(art.model.float().eval(), example_batch(art.preprocess))
    traced.save(str(path))


def write_onnx(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """ONNX through torch.export (dynamo), with a dynamic batch axis unless told otherwise."""
    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if opts.dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(art.model.float().eval(), (example_batch(art.preprocess),), dynamo=True,
                                    input_names=["input"], output_names=["logits"], dynamic_shapes=dynamic,
                                    opset_version=opts.opset, verbose=False)
    program.save(str(path))


def write_onnx_int8(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """Static int8 (QDQ, per-channel weights) with ONNX Runtime, calibrated on real images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if opts.calib is None:
        raise UsageError("onnx-int8 needs real images to calibrate: pass --calib-data PATH (or export a run folder)")
    fp32 = path.with_name(path.name + ".fp32.onnx")
    write_onnx(art, fp32, opts)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(opts.calib.split(32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    prepared = path.with_name(path.name + ".pre.onnx")
    try:
        # fold BatchNorm into the convolutions and infer shapes first, so the int8 graph quantizes fused convs
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # ONNX shapes suffice for CNNs
        logging.disable(logging.WARNING)  # the quantizer warns on the root logger for every 1-D weight
        quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=opts.int8_reduce_range)
    finally:
        logging.disable(logging.NOTSET)
        for leftover in (fp32, prepared):
            leftover.unlink(missing_ok=True)
            leftover.with_name(leftover.name + ".data").unlink(missing_ok=True)


def write_dynamic_int8(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """PyTorch dynamic int8 (Linear layers), saved as TorchScript."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao eager quantization warns of its move to torchao
        model = torch.ao.quantization.quantize_dynamic(art.model.float().eval(), {nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        torch.jit.trace(model, example_batch(art.preprocess)).save(str(path))


FORMATS = {
    "torchscript": Format(".ts", (), write_torchscript),
    "onnx": Format(".onnx", ("onnx", "onnxruntime", "onnxscript"), write_onnx),
    "onnx-int8": Format("-int8.onnx", ("onnx", "onnxruntime", "onnxscript"), write_onnx_int8, 0.95, True),
    "int8": Format("-int8.ts", (), write_dynamic_int8, 0.98, True),
}
