"""The GPU meter: the epoch line's busy % is the mean over the epoch, not one reading after it."""
import sys
import time
import types

import torch

from cnnmode.engine.device import GpuMeter


def fake_nvml(busy: list[int]) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's `pynvml` whose GPU reports `busy` in turn, then 0 (as after an epoch)."""
    readings = iter(busy)
    nvml = types.ModuleType("pynvml")
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    nvml.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=next(readings, 0))
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=5 * 2**30, total=6 * 2**30)
    nvml.nvmlDeviceGetTemperature = lambda handle, sensor: 64
    return nvml


def test_reading_is_the_mean_since_the_last_reading(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([90, 100, 80]))
    with GpuMeter(torch.device("cuda", 0), every=0.01) as meter:
        time.sleep(0.3)  # the three busy samples, then idle ones
        first = meter.reading()
        assert first.endswith("| 5.0/6.0 GB | 64°C")
        busy = int(first.split("%")[0].removeprefix("GPU "))
        assert 0 < busy < 90  # the busy samples averaged with the idle ones, not the last (idle) reading
        time.sleep(0.05)
        assert meter.reading().startswith("GPU 0%")  # a new reading covers only what came after the first


def test_nothing_without_a_cuda_device_or_nvml(monkeypatch):
    with GpuMeter(torch.device("cpu")) as meter:
        assert meter.reading() == ""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    with GpuMeter(torch.device("cuda", 0)) as meter:
        assert meter.reading() == ""
