"""`cnnmode bench`: latency and throughput per inference backend and batch size, with top-1 agreement."""
from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from cnnmode.deploy.artifact import Artifact, load_artifact
from cnnmode.deploy.export import ExportOptions, calibration_images, real_images, write_onnx, write_onnx_int8
from cnnmode.deploy.quantize import quantize_x86
from cnnmode.engine.device import pick_device
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write_text

Runner = Callable[[torch.Tensor], torch.Tensor]


def _ort_session(path: Path) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def make_runner(name: str, art: Artifact, device: torch.device, workdir: Path,
                calib: torch.Tensor | None) -> Runner:
    """A function batch → logits (on the CPU) for one backend."""
    model = copy.deepcopy(art.model).float().eval().to(device)  # backends change layouts in place
    if name == "eager":
        return lambda x: model(x.to(device)).float().cpu()
    if name in ("eager-bf16", "compile"):
        fast = model.to(memory_format=torch.channels_last)
        fast = torch.compile(fast) if name == "compile" else fast
        dtype = torch.bfloat16

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype):
                return fast(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()
        return run
    if name == "torchscript":
        example = torch.zeros(2, art.preprocess["channels"], art.preprocess["img_size"], art.preprocess["img_size"])
        frozen = torch.jit.freeze(torch.jit.trace(model.cpu(), example))
        try:
            optimized = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.cpu(), example)))
            for _ in range(3):  # the JIT specialises after a few calls; some ops (uneven adaptive pooling) fail then
                optimized(example)
            frozen = optimized
        except RuntimeError:
            pass
        return lambda x: frozen(x)
    if name == "onnxruntime":
        write_onnx(art, workdir / "model.onnx", ExportOptions())
        return _ort_session(workdir / "model.onnx")
    if name in ("int8", "int8-x86") and calib is None:
        raise UsageError(f"the {name} backend calibrates on real images: pass --data PATH (or bench a run folder)")
    if name == "int8":
        write_onnx_int8(art, workdir / "model-int8.onnx", ExportOptions(calib=calib))
        return _ort_session(workdir / "model-int8.onnx")
    if name == "int8-x86":
        return quantize_x86(model.cpu(), calib)
    raise UsageError(f"unknown backend '{name}'; choose from: {', '.join(BACKENDS)}")


BACKENDS = ("eager", "eager-bf16", "compile", "torchscript", "onnxruntime", "int8", "int8-x86")


@torch.no_grad()
def time_batches(run: Runner, x: torch.Tensor, warmup: int = 3, min_iters: int = 5, budget_s: float = 1.5) -> dict:
    """p50/p95 latency (ms) and throughput (img/s) of `run` on batch `x`."""
    for _ in range(warmup):
        run(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < budget_s and len(times) < 200):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    times.sort()
    p50 = statistics.median(times)
    return {"p50_ms": round(1000 * p50, 3), "p95_ms": round(1000 * times[min(len(times) - 1, int(0.95 * len(times)))], 3),
            "img_s": round(len(x) / p50, 1), "iters": len(times)}


@torch.no_grad()
def predicted_classes(run: Runner, images: torch.Tensor) -> torch.Tensor:
    """Top-1 class of every image, in chunks of 256."""
    return torch.cat([run(chunk).argmax(1) for chunk in images.split(256)])


def measure_agreement(run: Runner, reference: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """Share of images whose top-1 class matches `reference`, and accuracy when `labels` are given."""
    preds = predicted_classes(run, images)
    out = {"top1_agreement": float((preds == reference).float().mean())}
    if labels is not None:
        out["accuracy"] = float((preds == labels).float().mean())
    return out


def bench(target: str, batch_sizes: list[int], backends: list[str], device: str = "cpu", data: str | None = None,
          eval_images: int = 2000, profile: bool = False, out: str | None = None, budget_s: float = 1.5) -> dict:
    """Benchmark every backend at every batch size; agreement with eager fp32 on real (or generated) images."""
    for name in backends:
        if name not in BACKENDS:
            raise UsageError(f"unknown backend '{name}'; choose from: {', '.join(BACKENDS)}")
    dev = pick_device(device)
    art = load_artifact(target)
    path = Path(target)
    p = art.preprocess
    found = real_images(data, target, eval_images, "test")
    images, labels = found if found else (torch.randn(256, p["channels"], p["img_size"], p["img_size"]), None)
    calib = calibration_images(data, target, 512) if {"int8", "int8-x86"} & set(backends) else None
    eager = make_runner("eager", art, dev, Path(), None)
    reference = predicted_classes(eager, images)
    results: dict = {"model": art.name, "img_size": p["img_size"], "device": str(dev), "threads": torch.get_num_threads(),
                     "eval_images": len(images), "eval_data": "real" if labels is not None else "generated",
                     "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            run = make_runner(name, art, dev, Path(tmp), calib)
            row = {"batches": {}, **measure_agreement(run, reference, images, labels)}
            for bs in batch_sizes:
                x = images[:bs] if len(images) >= bs else torch.randn(bs, *images.shape[1:])
                row["batches"][str(bs)] = time_batches(run, x, budget_s=budget_s)
            results["backends"][name] = row
    if profile:
        results["profile"] = _profile(eager, images[:max(batch_sizes)], path)
    out_path = Path(out) if out else (path if path.is_dir() else path.parent) / "bench.json"
    atomic_write_text(out_path, json.dumps(results, indent=2))
    results["file"] = str(out_path)
    return results


def _profile(run: Runner, x: torch.Tensor, path: Path) -> str:
    trace = (path if path.is_dir() else path.parent) / "bench_trace.json"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run(x)
    prof.export_chrome_trace(str(trace))
    return str(trace)
