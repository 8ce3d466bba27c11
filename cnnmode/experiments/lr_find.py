"""`cnnmode lr-find`: an exponential learning-rate sweep with the smoothed loss curve and a suggested LR."""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.optim import lr_scheduler

from cnnmode.config import Config
from cnnmode.data import build_data
from cnnmode.engine.device import pick_device, pick_precision
from cnnmode.engine.loop import optimizer_step
from cnnmode.engine.losses import Criterion
from cnnmode.engine.optim import build_optimizer
from cnnmode.engine.setup import build_run_model, make_step_setup
from cnnmode.figures import plt, save_fig
from cnnmode.files import atomic_write_text
from cnnmode.rundir import new_run_name


def sweep(cfg: Config, start_lr: float = 1e-6, end_lr: float = 10.0, steps: int = 200, smooth: float = 0.9,
          diverge: float = 4.0) -> dict:
    """Train from fresh weights while the LR grows from `start_lr` to `end_lr` over `steps` steps.

    Stops early once the smoothed loss exceeds `diverge` x its minimum. Returns the LRs, raw and smoothed
    losses, and the suggestion: the LR where the smoothed loss falls fastest, before its minimum.
    """
    device = pick_device(cfg.run.device)
    precision = pick_precision(cfg.train.amp, device)
    torch.manual_seed(cfg.train.seed)
    data = build_data(cfg, device)
    model, _ = build_run_model(cfg, data, info=lambda message: None)
    model = model.to(device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format)
    optimizer = build_optimizer(replace(cfg, optim=replace(cfg.optim, lr=start_lr)), model)
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    # every group grows from its own start (so optim.bias_lr_scale keeps its ratio), advanced once per step
    scheduler = lr_scheduler.LambdaLR(optimizer, lambda step: factor ** step)
    setup = make_step_setup(cfg, optimizer, device=device, precision=precision)
    criterion = Criterion.from_config(cfg)
    lrs, losses, smoothed, avg = [], [], [], 0.0
    model.train()
    for x, y in _endless(data.train):
        lrs.append(optimizer.param_groups[0]["lr"])
        with precision.autocast(device):
            loss = criterion(model(x), y, x)
        setup.scaler.scale(loss).backward()
        optimizer_step(model, setup)
        scheduler.step()
        value = loss.item()  # one sync per step is fine here: the sweep is short and needs every value
        avg = smooth * avg + (1 - smooth) * value
        losses.append(value)
        smoothed.append(avg / (1 - smooth ** len(lrs)))
        if not math.isfinite(value) or smoothed[-1] > diverge * min(smoothed) or len(lrs) >= steps:
            break
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "suggested_lr": suggest(lrs, smoothed),
            "min_loss_lr": lrs[int(np.nanargmin(smoothed))]}


def _endless(loader):
    """Batches of `loader`, epoch after epoch."""
    for epoch in itertools.count(1):
        loader.set_epoch(epoch)
        yield from loader


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The LR of steepest descent of the smoothed loss (in log-LR), searched before the loss minimum."""
    values = np.asarray(smoothed, dtype=float)
    values[~np.isfinite(values)] = np.inf
    stop = max(2, int(np.argmin(values)) + 1)
    if stop < 3:
        return float(lrs[0])
    slope = np.gradient(values[:stop], np.log(np.asarray(lrs[:stop])))
    return float(lrs[int(np.argmin(slope))])


def plot(result: dict, path: Path) -> Path:
    """Smoothed loss against LR (log scale) with the suggestion marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result["lrs"], result["losses"], color="0.8", lw=1, label="loss")
    ax.plot(result["lrs"], result["smoothed"], color="tab:blue", lw=2, label="smoothed loss")
    lr = result["suggested_lr"]
    ax.axvline(lr, color="tab:red", ls="--", label=f"suggested {lr:.2e}")
    finite = [v for v in result["smoothed"] if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 3 * min(finite)) * 1.05)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="Learning-rate finder")
    ax.legend()
    return save_fig(fig, path)


def run_lr_find(cfg: Config, out: str | Path | None = None, **kwargs) -> dict:
    """Sweep, then write lr_find.json and lr_find.png to `out` (default `<run.dir>/lr-find-<time>`); returns the
    result with the file paths."""
    result = sweep(cfg, **kwargs)
    out = Path(out) if out else Path(cfg.run.dir) / new_run_name("lr-find", "")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "lr_find.json", json.dumps(result, indent=2))
    result["plot"] = str(plot(result, out / "lr_find.png"))
    result["json"] = str(out / "lr_find.json")
    return result
