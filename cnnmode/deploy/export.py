"""`cnnmode export`: one small function per format, each wrapped by the same verify-and-report step.

A file is only kept when its own runtime (a fresh torch.jit.load, or onnxruntime) reproduces the artifact's
logits within tolerance; the result goes into `export.json` beside `preprocess.json`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cnnmode.deploy.artifact import Artifact, artifact_data, load_artifact
from cnnmode.deploy.predict import Predictor, agreement
from cnnmode.errors import RunError, UsageError
from cnnmode.files import atomic_write_text


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


def _example(art: Artifact, n: int = 2) -> torch.Tensor:
    p = art.preprocess
    return torch.randn(n, p["channels"], p["img_size"], p["img_size"])


def write_torchscript(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """Traced TorchScript (fp32)."""
    with torch.no_grad():
        traced = torch.jit.trace(art.model.float().eval(), _example(art))
    traced.save(str(path))


def write_onnx(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """ONNX through torch.export (dynamo), with a dynamic batch axis unless told otherwise."""
    import warnings

    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if opts.dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(art.model.float().eval(), (_example(art),), dynamo=True,
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
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        for leftover in (fp32, prepared):
            leftover.unlink(missing_ok=True)
            leftover.with_name(leftover.name + ".data").unlink(missing_ok=True)


def write_dynamic_int8(art: Artifact, path: Path, opts: ExportOptions) -> None:
    """PyTorch dynamic int8 (Linear layers), saved as TorchScript."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao eager quantization warns of its move to torchao
        model = torch.ao.quantization.quantize_dynamic(art.model.float().eval(), {nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        torch.jit.trace(model, _example(art)).save(str(path))


FORMATS = {
    "torchscript": Format(".ts", (), write_torchscript),
    "onnx": Format(".onnx", ("onnx", "onnxruntime", "onnxscript"), write_onnx),
    "onnx-int8": Format("-int8.onnx", ("onnx", "onnxruntime", "onnxscript"), write_onnx_int8, 0.95, True),
    "int8": Format("-int8.ts", (), write_dynamic_int8, 0.98, True),
}


def _check_needs(name: str, fmt: Format) -> None:
    missing = [m for m in fmt.needs if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"export format '{name}' needs {', '.join(missing)}: pip install {' '.join(missing)}")


def verify(art: Artifact, path: Path, images: torch.Tensor, fmt: Format) -> dict:
    """Run the exported file in its own runtime on `images`; compare with the artifact's fp32 logits."""
    with torch.no_grad():
        reference = art.model.float().eval()(images)
    exported = Predictor(path).logits(images)
    max_diff, agree = agreement(reference, exported)
    tolerance = 1e-3 * max(1.0, float(reference.abs().max()))
    ok = agree >= fmt.min_agreement and (fmt.quantized or max_diff <= tolerance)
    return {"max_abs_logit_diff": max_diff, "top1_agreement": agree, "images": len(images),
            "tolerance": None if fmt.quantized else tolerance, "min_agreement": fmt.min_agreement, "ok": ok}


def export(target: str, formats: list[str], out_dir: str | None = None, dynamic_batch: bool = True, opset: int = 18,
           calib: torch.Tensor | None = None, verify_images: int = 64) -> list[dict]:
    """Export an artifact to each format, verify it, and record everything in export.json."""
    names = list(FORMATS) if formats == ["all"] else formats
    for name in names:
        if name not in FORMATS:
            raise UsageError(f"unknown export format '{name}'; choose from: {', '.join(FORMATS)}, all")
        _check_needs(name, FORMATS[name])
    art = load_artifact(target)
    src = Path(target)
    folder = Path(out_dir) if out_dir else (src if src.is_dir() else src.parent) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "preprocess.json", json.dumps(art.preprocess | {
        "classes": art.classes, "model": art.name, "input": "input", "output": "logits", "layout": "NCHW",
        "dtype": "float32", "pixel_scale": "0-1 before normalisation"}, indent=2))
    images = calib[:verify_images] if calib is not None else _example(art, verify_images)
    opts = ExportOptions(dynamic_batch, opset, calib)
    results = []
    if calib is None and formats == ["all"]:
        names.remove("onnx-int8")  # static int8 needs real images; the rest export without them
    for name in names:
        fmt = FORMATS[name]
        final = folder / f"model{fmt.suffix}"
        tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
        start = time.perf_counter()
        try:
            fmt.write(art, tmp, opts)
            check = verify(art, tmp, images, fmt)
            if not check["ok"]:
                raise RunError(f"{name} export does not match the model: max |Δlogit| {check['max_abs_logit_diff']:.2e}, "
                               f"top-1 agreement {100 * check['top1_agreement']:.2f}% on {len(images)} images; "
                               "nothing was written")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        results.append({"format": name, "file": str(final), "size_bytes": final.stat().st_size,
                        "seconds": round(time.perf_counter() - start, 2),
                        "verified_on": "real images" if calib is not None else "generated images", **check})
    record = folder / "export.json"
    previous = json.loads(record.read_text()) if record.exists() else {}
    atomic_write_text(record, json.dumps(previous | {r["format"]: r for r in results}, indent=2))
    return results


def real_images(source: str | None, target: str, n: int = 512, split: str = "val"
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to n normalised, unaugmented (images, labels), a stratified sample of a split of `source` or of a
    run folder's own data (so every class is represented)."""
    path = Path(target)
    if source is None and not (path.is_dir() and (path / "config.yaml").exists()):
        return None
    _, bundle = artifact_data(path, load_artifact(path), source, "reading images for", subset=n,
                              need_val=split == "val")
    xs, ys, count = [], [], 0
    for x, y in (bundle.test if split == "test" else bundle.val):
        xs.append(x.float())
        ys.append(y)
        count += len(x)
        if count >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def calibration_images(source: str | None, target: str, n: int = 512) -> torch.Tensor | None:
    """Real images for calibration and verification (the validation split, never the test split), or None."""
    found = real_images(source, target, n, "val")
    return found[0] if found else None
