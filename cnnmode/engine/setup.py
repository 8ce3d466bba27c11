"""Everything built once before the first step: the run's model, its optimizer, schedule, scaler, EMA and
early stopping, and the `Criterion` and `StepSetup` that `train_one_epoch` uses (one place maps the config onto
them)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cnnmode.config import Config
from cnnmode.data import DataBundle, TensorLoader
from cnnmode.engine.callbacks import EarlyStopping
from cnnmode.engine.device import Precision
from cnnmode.engine.distributed import World
from cnnmode.engine.loop import StepSetup
from cnnmode.engine.losses import Criterion
from cnnmode.engine.optim import build_optimizer, build_scheduler
from cnnmode.errors import UsageError
from cnnmode.files import torch_load
from cnnmode.models import build_model, head_module, resolve_stem
from cnnmode.rundir import resolve_target

log = logging.getLogger("cnnmode")


def load_pretrained(model: nn.Module, source: str, info: Callable[[str], None] = log.info) -> None:
    """Load weights from an artifact, checkpoint, state dict, or torchvision weights name; skip shape mismatches."""
    path = Path(source)
    if path.exists():
        path = resolve_target(path).file  # a run folder means its model.pt
    if path.is_file():
        blob = torch_load(path)
        state = blob.get("state_dict") or blob.get("model") or blob if isinstance(blob, dict) else None
    else:
        try:
            from torchvision.models import get_weight
            state = get_weight(source).get_state_dict(progress=False)
        except Exception as e:  # unknown name or no internet
            raise UsageError(f"model.pretrained='{source}' is neither a file nor loadable torchvision weights ({e})") from None
    if not isinstance(state, dict):
        raise UsageError(f"model.pretrained='{source}' holds no state dict")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    dropped = sorted(k for k in own if k not in usable)
    model.load_state_dict(usable, strict=False)
    info(f"pretrained: loaded {len(usable)}/{len(own)} tensors from {source}"
         + (f"; re-initialised {', '.join(dropped[:6])}{' ...' if len(dropped) > 6 else ''}" if dropped else ""))


def sample_for_init(data: DataBundle, n: int = 5000) -> torch.Tensor:
    """Normalised, unaugmented training images (for data-dependent initialisation)."""
    if isinstance(data.train, TensorLoader):
        loader = data.train
        idx = torch.randperm(len(loader.labels), generator=torch.Generator().manual_seed(0))[:n]
        x = loader.images[idx].float().to(loader.device)
        if loader.img_size and x.shape[-1] != loader.img_size:
            x = torch.nn.functional.interpolate(x, size=(loader.img_size,) * 2, mode="bilinear")
        return ((x - loader.mean) / loader.std).cpu()
    return next(iter(data.val))[0].float().cpu()


def build_run_model(cfg: Config, data: DataBundle, info: Callable[[str], None] = log.info,
                    fresh: bool = True) -> tuple[nn.Module, dict]:
    """The registry model for `cfg` and `data` and its arguments: data-dependent init, pretrained weights and
    freezing applied (`fresh=False` when a checkpoint will overwrite the weights anyway)."""
    args = {"num_classes": len(data.classes), "in_channels": data.channels,
            "stem": resolve_stem(cfg.model.stem, data.img_size), "width": cfg.model.width, "img_size": data.img_size}
    model = build_model(cfg.model.name, **args)
    if fresh and hasattr(model, "init_from_data"):
        model.init_from_data(sample_for_init(data))
    if fresh and cfg.model.pretrained:
        load_pretrained(model, cfg.model.pretrained, info)
    if cfg.model.freeze != "none":
        for p in frozen_parameters(model, cfg.model.freeze):
            if p.requires_grad:
                p.requires_grad_(False)
                p._cnnmode_frozen = True  # unfrozen by train.unfreeze_at; the model's own fixed weights stay fixed
    return model, args


def frozen_parameters(model: nn.Module, freeze: str) -> list[nn.Parameter]:
    """The parameters `model.freeze` holds fixed: all but the head's (`backbone`), or those of every module up to
    and including LAYER in the model's order (`until:LAYER`)."""
    if freeze == "backbone":
        head = {id(p) for p in head_module(model).parameters()}
        return [p for p in model.parameters() if id(p) not in head]
    layer = freeze.split(":", 1)[1]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    if layer not in order or not layer:
        tops = [n for n in order if n and "." not in n]
        raise UsageError(f"model.freeze=until:{layer}: no such layer; top-level layers: {', '.join(tops[:30])}")
    end = max(i for name, i in order.items() if name == layer or name.startswith(layer + "."))
    return [p for name, p in model.named_parameters() if order[name.rsplit(".", 1)[0] if "." in name else ""] <= end]


def make_step_setup(cfg: Config, optimizer: torch.optim.Optimizer, *, device: torch.device,
                    precision: Precision) -> StepSetup:
    """The optimizer step for `cfg`'s train keys: accumulation, clipping, and a GradScaler when the precision
    needs one."""
    return StepSetup(optimizer=optimizer, scaler=torch.amp.GradScaler(device.type, enabled=precision.use_scaler),
                     precision=precision, device=device, accum_steps=cfg.train.accum_steps,
                     grad_clip=cfg.train.grad_clip)


def ema_with_warmup(decay: float) -> Callable:
    """An EMA update for AveragedModel whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the first
    updates, so that on a short run the average follows training instead of staying near the first step's
    weights (at decay 0.99 a plain EMA still holds 92% of them after 8 steps)."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):  # integer buffers (BatchNorm's batch counter) follow as they are
            torch._foreach_copy_(averaged, current)
            return
        n = num_averaged.float()  # a tensor on the parameters' device: no host sync per step
        torch._foreach_lerp_(averaged, current, 1 - torch.clamp((1 + n) / (10 + n), max=decay))
    return update


@dataclass
class TrainParts:
    """The model and everything that steps with it; `state_dict` is what last.pt stores besides the RunState."""
    model: nn.Module
    forward_model: nn.Module  # what training calls: wrapped by DistributedDataParallel and/or torch.compile
    criterion: Criterion
    step: StepSetup  # holds the optimizer
    scheduler: object
    sched_every: str  # "step": advanced after every optimizer step (`after_step`); "epoch": by the epoch loop
    ema: torch.optim.swa_utils.AveragedModel | None
    stopper: EarlyStopping
    plain_forward: nn.Module | None = None  # the (compiled) model without the data-parallel wrapper

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    def after_step(self) -> None:
        """After each optimizer step: advance a per-step schedule and the weight EMA."""
        if self.sched_every == "step":
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @property
    def eval_model(self) -> nn.Module:
        """What evaluation calls: the EMA, else the model (never the DDP wrapper, whose forward is collective)."""
        if self.ema is not None:
            return self.ema.module
        return self.plain_forward if self.plain_forward is not None else self.forward_model

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.step.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "early_stop": self.stopper.state_dict()}

    def load_state_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.stopper.load_state_dict(ckpt["early_stop"])


def make_parts(cfg: Config, model: nn.Module, *, steps_per_epoch: int, device: torch.device,
               precision: Precision, teacher: nn.Module | None = None, weights: torch.Tensor | None = None,
               world: World = World(), multilabel: bool = False, pos_weight: torch.Tensor | None = None) -> TrainParts:
    """Move the model to the device and build its criterion (`weights`: per class; `teacher`: for distillation;
    `multilabel` and `pos_weight`: sigmoid outputs for label sets),
    optimizer step, schedule, EMA and early stopping. In a data-parallel job the training forward goes through
    DistributedDataParallel (after SyncBatchNorm with train.sync_bn), compiled as a whole with train.compile."""
    if cfg.train.sync_bn and world.active:
        if device.type != "cuda":
            raise UsageError("train.sync_bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU kernels); "
                             "set train.sync_bn=false for CPU ranks")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device)
    plain = torch.compile(model) if cfg.train.compile else model
    forward_model, plain_forward = plain, None
    if world.active:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        forward_model, plain_forward = (torch.compile(ddp) if cfg.train.compile else ddp), plain
    optimizer = build_optimizer(cfg, model)
    scheduler, sched_every = build_scheduler(cfg, optimizer, max(1, steps_per_epoch // cfg.train.accum_steps))
    ema = None
    if cfg.train.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(cfg.train.ema),
                                                  use_buffers=True)
    return TrainParts(model=model, forward_model=forward_model,
                      criterion=Criterion.from_config(cfg, weights=weights, teacher=teacher, device=device,
                                                      multilabel=multilabel, pos_weight=pos_weight),
                      step=make_step_setup(cfg, optimizer, device=device, precision=precision),
                      scheduler=scheduler, sched_every=sched_every, ema=ema,
                      stopper=EarlyStopping(cfg.train.early_stop_patience, cfg.train.early_stop_min_delta),
                      plain_forward=plain_forward)
