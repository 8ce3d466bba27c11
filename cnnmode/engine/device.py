"""Device choice and mixed-precision settings, device-agnostic through `torch.amp`."""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnmode.engine.cpu import cpu_kind
from cnnmode.errors import UsageError


def prepare_cuda_env() -> None:
    """Allocator setting that must be in place before CUDA initialises (fewer fragmentation OOMs)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


@functools.cache
def tune_cpu_allocator() -> bool:
    """Stop glibc from handing large freed blocks back to the OS after every step (Linux only; True if applied).

    By default each multi-megabyte batch or activation is a fresh mmap that page-faults and is zeroed by the
    kernel, then unmapped when freed: on a 2-core CPU that system time cost about 15-20% of every training step.
    Keeping them in the heap (what jemalloc or tcmalloc give through LD_PRELOAD) needs only three mallopt calls.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum
                & libc.mallopt(m_trim_threshold, (1 << 31) - 1) & libc.mallopt(m_top_pad, 1 << 30))


def pick_device(name: str) -> torch.device:
    """`auto` → cuda > mps > cpu; explicit names are checked. On a CPU, also `tune_cpu_allocator`."""
    prepare_cuda_env()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device '{name}' (run.device or --device) is not valid; choose auto, cpu, cuda, cuda:N "
                         "or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' (run.device or --device) asks for a GPU but no CUDA GPU is available; "
                         "use auto or cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu":
        tune_cpu_allocator()
    return device


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and whether a GradScaler is needed."""
    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device):
        """An autocast context for `device` (disabled for fp32)."""
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def pick_precision(amp: str, device: torch.device) -> Precision:
    """Resolve `train.amp` for the device."""
    if amp == "off":
        return Precision(None, False)
    if amp == "auto":
        if device.type == "cuda":
            return Precision(torch.bfloat16, False) if torch.cuda.is_bf16_supported() else Precision(torch.float16, True)
        if device.type == "cpu":
            return Precision(cpu_kind().amp_dtype, False)
        return Precision(None, False)
    if amp == "fp16":
        return Precision(torch.float16, device.type == "cuda")
    return Precision(torch.bfloat16, False)


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed every RNG and, when asked, force deterministic kernels."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since the last `reset_peak_memory`: CUDA allocator peak on GPUs, peak RSS elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # Linux: resettable, unlike getrusage's maximum
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    info = psutil.Process().memory_info()
    # Windows reports the peak working set; macOS has no peak through psutil, so the resident size now
    return getattr(info, "peak_wset", info.rss) / 2**20


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak, so each of several runs in one process (a study) reports its own."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass


class GpuMeter:
    """How busy a CUDA GPU was between two readings: NVML (nvidia-ml-py) sampled every `every` s on a daemon
    thread, so the epoch line says how busy the GPU was during the epoch, not in the idle moment after it (a
    reading taken then said 3-5% for a GPU that was 94% busy throughout). Quietly nothing without a CUDA device,
    NVML or a driver that answers. Use as a context manager."""

    def __init__(self, device: torch.device, every: float = 0.5):
        self._handle = _nvml_handle(device)
        self._busy: list[int] = []
        self._every = every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="cnnmode-gpu-meter")
        if self._handle is not None:
            self._thread.start()

    def __enter__(self) -> "GpuMeter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sample(self) -> None:
        import pynvml

        while not self._done.wait(self._every):
            try:
                self._busy.append(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            except Exception:  # a driver that stops answering ends the sampling, not the run
                return

    def reading(self) -> str:
        """'GPU 87% | 5.1/6.0 GB | 64°C': the mean busy % since the last reading, memory in use and temperature
        now; '' where there is nothing to read."""
        if self._handle is None:
            return ""
        import pynvml

        busy, self._busy = self._busy, []
        try:
            util = round(sum(busy) / len(busy)) if busy else pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            mem = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
            temp = pynvml.nvmlDeviceGetTemperature(self._handle, pynvml.NVML_TEMPERATURE_GPU)
        except Exception:
            return ""
        return f"GPU {util}% | {mem.used / 2**30:.1f}/{mem.total / 2**30:.1f} GB | {temp}°C"

    def close(self) -> None:
        """Stop sampling (the thread ends within one interval)."""
        self._done.set()


def _nvml_handle(device: torch.device):
    """NVML's handle for a CUDA device, or None (no CUDA device, no nvidia-ml-py, or no driver answering)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception:  # ImportError or any NVMLError
        return None
