"""`cnnmode export`: every format's writer (see `formats`) wrapped by the same verify-and-report step.

A file is only kept when its own runtime (a fresh torch.jit.load, or onnxruntime) reproduces the artifact's
logits within tolerance; the result goes into `export.json` beside `preprocess.json`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import torch

from cnnmode.artifact import Artifact, load_artifact
from cnnmode.deploy.formats import FORMATS, ExportOptions, Format, example_batch
from cnnmode.deploy.runtime import load_runner
from cnnmode.deploy.samples import calibration_images
from cnnmode.errors import RunError, UsageError
from cnnmode.files import atomic_write_text
from cnnmode.rundir import resolve_target
from cnnmode.unknowns import load_rejector


EXPORTED_REJECTION = ("--reject on an exported file uses the calibrated max-softmax alone (in preprocess.json); "
                      "the k-NN score needs the model's embedding and stays with the artifact in the PyTorch runtime")


def _check_needs(name: str, fmt: Format) -> None:
    missing = [m for m in fmt.needs if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"export format '{name}' needs {', '.join(missing)}: pip install {' '.join(missing)}")


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |Δlogit|, top-1 agreement) between two logit tensors."""
    return float((a - b).abs().max()), float((a.argmax(1) == b.argmax(1)).float().mean())


def verify(art: Artifact, path: Path, images: torch.Tensor, fmt: Format) -> dict:
    """Run the exported file in its own runtime on `images`; compare with the artifact's fp32 logits."""
    with torch.no_grad():
        reference = art.model.float().eval()(images)
    max_diff, agree = agreement(reference, load_runner(path)(images))
    tolerance = 1e-3 * max(1.0, float(reference.abs().max()))
    ok = agree >= fmt.min_agreement and (fmt.quantized or max_diff <= tolerance)
    return {"max_abs_logit_diff": max_diff, "top1_agreement": agree, "images": len(images),
            "tolerance": None if fmt.quantized else tolerance, "min_agreement": fmt.min_agreement, "ok": ok}


def export(target: str, formats: list[str], out_dir: str | None = None, dynamic_batch: bool = True, opset: int = 18,
           calib_data: str | None = None, verify_images: int = 64) -> list[dict]:
    """Export an artifact (or a run folder's) to each format, verify it, and record everything in export.json.

    Calibration and verification use real images: `calib_data`, else a run folder's own validation split;
    without either, verification uses generated images and `onnx-int8` (static int8) is refused.
    """
    names = list(FORMATS) if formats == ["all"] else formats
    for name in names:
        if name not in FORMATS:
            raise UsageError(f"unknown export format '{name}'; choose from: {', '.join(FORMATS)}, all")
        _check_needs(name, FORMATS[name])
    where = resolve_target(target)
    art = load_artifact(where)
    calib = calibration_images(where, art, calib_data)
    folder = Path(out_dir) if out_dir else where.home / "export"
    folder.mkdir(parents=True, exist_ok=True)
    rejector = None if art.multilabel else load_rejector(where.file)
    reject = {"reject": rejector.state(with_index=False)} if rejector is not None else {}  # max-softmax only
    atomic_write_text(folder / "preprocess.json", json.dumps(art.preprocess | {
        "classes": art.classes, "model": art.name, "input": "input", "output": "logits", "layout": "NCHW",
        "dtype": "float32", "pixel_scale": "0-1 before normalisation"} | reject, indent=2))
    images = calib[:verify_images] if calib is not None else example_batch(art.preprocess, verify_images)
    if calib is None and formats == ["all"]:
        names.remove("onnx-int8")  # static int8 needs real images; the rest export without them
    opts = ExportOptions(dynamic_batch, opset, calib)
    results = [_export_one(art, name, folder, opts, images) | ({"unknowns": EXPORTED_REJECTION} if reject else {})
               for name in names]
    record = folder / "export.json"
    previous = json.loads(record.read_text()) if record.exists() else {}
    atomic_write_text(record, json.dumps(previous | {r["format"]: r for r in results}, indent=2))
    return results


def _export_one(art: Artifact, name: str, folder: Path, opts: ExportOptions, images: torch.Tensor) -> dict:
    """Write one format to a temp file, verify it, and only then move it into place."""
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
    scheme = {"int8_weights": "7-bit (reduce_range)" if opts.int8_reduce_range else "8-bit"} if name == "onnx-int8" else {}
    return {"format": name, "file": str(final), "size_bytes": final.stat().st_size,
            "seconds": round(time.perf_counter() - start, 2),
            "verified_on": "real images" if opts.calib is not None else "generated images", **scheme, **check}
