"""Optimizer and learning-rate schedule factories."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.optim import lr_scheduler
from torch.optim._muon import DEFAULT_A as NS_A, DEFAULT_B as NS_B, DEFAULT_C as NS_C, EPS  # torch.optim.Muon's

from cnnmode.config import Config
from cnnmode.engine.cpu import cpu_kind
from cnnmode.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


def param_groups(model: nn.Module, weight_decay: float, lr: float, bias_lr_scale: float = 1.0) -> list[dict]:
    """No weight decay on biases and normalisation parameters (1-D tensors), which train at `bias_lr_scale` x lr.

    Frozen parameters are included too (they get no gradient, so they do not move) so that a backbone
    unfrozen later trains with the same optimizer.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr * bias_lr_scale}]


class MuonSGD(torch.optim.SGD):
    """SGD whose groups marked `muon=True` (conv filters) take Muon steps instead.

    For those groups the Nesterov momentum of the gradient is orthogonalised with torch's Newton-Schulz
    iteration (the update of `torch.optim.Muon`, applied to each filter bank viewed as out x in*k*k), and the
    filter bank is first rescaled to a Frobenius norm of sqrt(out channels). The rescaling stands in for weight
    decay and assumes a normalisation layer follows each conv (as in FastNet and the ResNets), so the filters'
    scale carries no meaning. The final `p -= lr * update` is SGD's own, so schedules act on every group alike.
    """

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (documented on the class)
        for group in self.param_groups:
            if group.get("muon"):
                self._orthogonalise(group)
        return super().step(closure)

    def _orthogonalise(self, group: dict) -> None:
        beta = group["muon_momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            buf = self.state[p].setdefault("muon_buffer", torch.zeros_like(p.grad))
            buf.mul_(beta).add_(p.grad)
            direction = p.grad.add(buf, alpha=beta)
            p.mul_(len(p) ** 0.5 / p.norm().clamp(min=EPS))
            update = newton_schulz(direction.reshape(len(p), -1), group["ns_steps"], iteration_dtype(p.device))
            p.grad.copy_(update.view_as(p))


def iteration_dtype(device: torch.device) -> torch.dtype:
    """Newton-Schulz runs in bf16 on GPUs and on CPUs with bf16 kernels, in fp32 on the others (see `cpu_kind`)."""
    return cpu_kind().newton_schulz_dtype if device.type == "cpu" else torch.bfloat16


def newton_schulz(matrix: torch.Tensor, steps: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The approximate orthogonalisation of `matrix` (rows x cols) by torch.optim.Muon's quintic Newton-Schulz
    iteration and coefficients, computed in `dtype` (torch's own is fixed to bf16; with bf16 this is the same)."""
    x = matrix.to(dtype)
    tall = len(x) > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=EPS)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=NS_B, alpha=NS_C), x, beta=NS_A)
    return x.T if tall else x


@OPTIMIZERS.register("muon")
def _muon(groups, cfg: Config):
    filters, rest = [], []
    for group in groups:  # conv filter banks (4-D weights) move to Muon groups
        filters += [p for p in group["params"] if p.ndim == 4]
        rest.append({**group, "params": [p for p in group["params"] if p.ndim != 4]})
    muon = {"params": filters, "lr": cfg.optim.muon_lr, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
            "muon": True, "muon_momentum": cfg.optim.muon_momentum, "ns_steps": 3}
    return MuonSGD([g for g in [muon, *rest] if g["params"]], lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                   nesterov=cfg.optim.nesterov and cfg.optim.momentum > 0)


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
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.bias_lr_scale)
    return OPTIMIZERS.get(cfg.optim.name)(groups, cfg)


# Each schedule returns (scheduler, steps per call): "step" schedulers advance every optimizer step,
# "epoch" ones once per epoch (plateau with the validation accuracy).
@SCHEDULES.register("onecycle")
def _onecycle(opt, cfg: Config, steps: int):
    max_lr = [group["lr"] for group in opt.param_groups]
    total = max(3, steps * cfg.train.epochs + 1)
    # OneCycleLR divides by the length of each phase: on a run of a handful of steps both must last over a step
    pct_start = min(max(cfg.sched.pct_start, 1.5 / total), 1 - 0.5 / total)
    return lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct_start,
                                   anneal_strategy="linear", cycle_momentum=False, div_factor=25,
                                   final_div_factor=1e3), "step"


@SCHEDULES.register("cosine")
def _cosine(opt, cfg: Config, steps: int):
    warm = int(round(cfg.sched.warmup_epochs * steps))
    total = steps * cfg.train.epochs

    def factor(step: int) -> float:  # of each group's own peak lr: linear warm-up, then cosine down to 1e-3
        if step < warm:
            return 1e-3 + (1 - 1e-3) * step / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_scheduler.LambdaLR(opt, factor), "step"


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
