"""`train.profile=true`: trace a few training steps with torch.profiler before the run starts."""
from __future__ import annotations

import copy
import itertools

import torch

from cnnmode.config import Config
from cnnmode.data import DataBundle
from cnnmode.engine.checkpoint import rng_state, set_rng_state
from cnnmode.engine.console import Reporter
from cnnmode.engine.loop import train_one_epoch
from cnnmode.engine.setup import TrainParts, make_step_setup
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir


def profile_steps(cfg: Config, parts: TrainParts, data: DataBundle, run: RunDir, reporter: Reporter,
                  steps: int = 5) -> None:
    """Trace `steps` training steps (on a copy of the model, at LR 0) into profile_trace.json and print the top
    operators (also in profile_top_ops.txt). The run that follows is unchanged: RNG state is restored."""
    saved_rng = rng_state()
    model = copy.deepcopy(parts.model)
    setup = make_step_setup(cfg, torch.optim.SGD(model.parameters(), lr=0.0), device=parts.step.device,
                            precision=parts.step.precision)
    data.train.set_epoch(0)
    loader = list(itertools.islice(iter(data.train), steps + 1))
    train_one_epoch(model, loader[:1], parts.criterion, setup)  # warm-up outside the trace
    activities = [torch.profiler.ProfilerActivity.CPU]
    if setup.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        train_one_epoch(model, loader[1:], parts.criterion, setup)
    set_rng_state(saved_rng)
    trace = run.path / "profile_trace.json"
    prof.export_chrome_trace(str(trace))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    atomic_write_text(run.path / "profile_top_ops.txt", table)
    reporter.info(f"profile of {len(loader) - 1} steps: {trace} (open in chrome://tracing or Perfetto); top "
                  f"operators by self CPU time:\n{table}")
