"""`cnnmode bench`: latency and throughput per inference backend and batch size, with top-1 agreement."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from cnnmode.artifact import load_artifact
from cnnmode.deploy.runtime import CALIBRATED, MIN_AGREEMENT, Forward, check_backends, load_runner
from cnnmode.deploy.samples import calibration_for, sample_images
from cnnmode.engine.device import pick_device
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write_text
from cnnmode.rundir import resolve_target


@torch.no_grad()
def time_batches(run: Forward, x: torch.Tensor, warmup: int = 3, min_iters: int = 5, budget_s: float = 1.5) -> dict:
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
def predicted_classes(run: Forward, images: torch.Tensor) -> torch.Tensor:
    """Top-1 class of every image, in chunks of 256."""
    return torch.cat([run(chunk).argmax(1) for chunk in images.split(256)])


def measure_agreement(run: Forward, reference: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """Share of images whose top-1 class matches `reference`, and accuracy when `labels` are given."""
    preds = predicted_classes(run, images)
    out = {"top1_agreement": float((preds == reference).float().mean())}
    if labels is not None and labels.ndim == 1:  # label sets: agreement only (their accuracy is `eval`'s mAP)
        out["accuracy"] = float((preds == labels).float().mean())
    return out


def bench(target: str, batch_sizes: list[int], backends: list[str], device: str = "auto", data: str | None = None,
          eval_images: int = 2000, profile: bool = False, out: str | None = None, budget_s: float = 1.5,
          say: Callable[[str], None] = lambda line: None) -> dict:
    """Benchmark every backend at every batch size; agreement with eager fp32 on real (or generated) images."""
    check_backends(backends)
    if not batch_sizes or min(batch_sizes) < 1:
        raise UsageError(f"--batch-sizes must be positive whole numbers, got {batch_sizes}")
    dev = pick_device(device)
    say(f"bench on {dev}" + (" (the onnxruntime, openvino and int8 backends on the CPU)" if dev.type != "cpu" else ""))
    where = resolve_target(target)
    art = load_artifact(where)
    p = art.preprocess
    found = sample_images(where, art, data, eval_images, "test")
    images, labels = found if found else (torch.randn(256, p["channels"], p["img_size"], p["img_size"]), None)
    calib = calibration_for(where, art, data, 512) if set(CALIBRATED + ("auto",)) & set(backends) else None
    eager = load_runner(art, "eager", dev)
    reference = predicted_classes(eager, images)
    results: dict = {"model": art.name, "img_size": p["img_size"], "device": str(dev), "threads": torch.get_num_threads(),
                     "eval_images": len(images), "eval_data": "real" if labels is not None else "generated",
                     "backends": {}}
    for name in backends:
        run = load_runner(art, name, dev, calib)
        if name == "auto":
            say(f"auto: {run.describe()}")
        row = {"backend": run.backend, "chosen_by": run.chosen_by, "batches": {},
               **measure_agreement(run, reference, images, labels)}
        row["passes_gate"] = row["top1_agreement"] >= MIN_AGREEMENT
        for bs in batch_sizes:
            x = images[:bs] if len(images) >= bs else torch.randn(bs, *images.shape[1:])
            row["batches"][str(bs)] = time_batches(run, x, budget_s=budget_s)
        results["backends"][name] = row
    if profile:
        results["profile"] = _profile(eager, images[:max(batch_sizes)], where.home / "bench_trace.json")
    out_path = Path(out) if out else where.home / "bench.json"
    atomic_write_text(out_path, json.dumps(results, indent=2))
    results["file"] = str(out_path)
    return results


def _profile(run: Forward, x: torch.Tensor, trace: Path) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run(x)
    prof.export_chrome_trace(str(trace))
    return str(trace)
