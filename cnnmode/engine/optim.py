"""Optimizer and learning-rate schedule factories."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from cnnmode.config import Config
from cnnmode.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters (1-D tensors).

    Frozen parameters are included too (they get no gradient, so they do not move) so that a backbone
    unfrozen later trains with the same optimizer.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@OPTIMIZERS.register("sgd")
def _sgd(groups, cfg: Config):
    return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                           nesterov=cfg.optim.nesterov and cfg.optim.momentum > 0)


@OPTIMIZERS.register("adam")
def _adam(groups, cfg: Config):
    return torch.optim.Adam(groups, lr=cfg.optim.lr)


@OPTIMIZERS.register("adamw")
def _adamw(groups, cfg: Config):
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


@OPTIMIZERS.register("radam")
def _radam(groups, cfg: Config):
    return torch.optim.RAdam(groups, lr=cfg.optim.lr, decoupled_weight_decay=True)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by `optim.name` over the model's trainable parameters."""
    return OPTIMIZERS.get(cfg.optim.name)(param_groups(model, cfg.optim.weight_decay), cfg)


# Each schedule returns (scheduler, steps per call): "step" schedulers advance every optimizer step,
# "epoch" ones once per epoch (plateau with the validation accuracy).
@SCHEDULES.register("onecycle")
def _onecycle(opt, cfg: Config, steps: int):
    return lr_scheduler.OneCycleLR(opt, max_lr=cfg.optim.lr, total_steps=steps * cfg.train.epochs + 1,
                                   pct_start=cfg.sched.pct_start, anneal_strategy="linear",
                                   cycle_momentum=False, div_factor=25, final_div_factor=1e3), "step"


@SCHEDULES.register("cosine")
def _cosine(opt, cfg: Config, steps: int):
    warm = int(round(cfg.sched.warmup_epochs * steps))
    total = steps * cfg.train.epochs
    cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=cfg.optim.lr * 1e-3)
    if warm == 0:
        return cosine, "step"
    warmup = lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warm)
    return lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[warm]), "step"


@SCHEDULES.register("step")
def _step(opt, cfg: Config, steps: int):
    return lr_scheduler.StepLR(opt, step_size=cfg.sched.step_size, gamma=cfg.sched.gamma), "epoch"


@SCHEDULES.register("plateau")
def _plateau(opt, cfg: Config, steps: int):
    return lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.sched.gamma,
                                          patience=cfg.sched.plateau_patience), "epoch"


@SCHEDULES.register("constant")
def _constant(opt, cfg: Config, steps: int):
    return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0), "epoch"


LENGTH_BOUND = ("onecycle", "cosine")  # schedules whose shape depends on train.epochs


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """(scheduler, 'step' | 'epoch') for `sched.name`."""
    return SCHEDULES.get(cfg.sched.name)(optimizer, cfg, steps_per_epoch)
