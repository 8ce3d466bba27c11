"""Run a command while sampling the GPU through NVML (nvidia-ml-py) every 0.2 s; print how busy it was.

    python benchmarks/gpu_busy.py -- python -m cnnmode train --recipe cnnmode-resnet50 ...

Prints, after the command's own output, `GPU busy median M% (mean A%, N samples), memory peak P GB of T GB` over
the samples taken once the GPU first became busy (start-up and data loading before the first step excluded), and
exits with the command's status. Used by `cuda_check.sh`.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time


def main() -> int:
    import pynvml

    command = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    busy: list[int] = []
    memory: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            if busy or util > 0:
                busy.append(util)
                memory.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = subprocess.call(command)
    done.set()
    sampler.join()
    total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    if busy:
        print(f"GPU busy median {statistics.median(busy):.0f}% (mean {statistics.mean(busy):.0f}%, {len(busy)} "
              f"samples), memory peak {max(memory) / 2**30:.2f} GB of {total / 2**30:.1f} GB", flush=True)
    else:
        print("GPU busy: no sample above 0%", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
