"""`fit`: the epoch loop. Trains, validates, schedules, keeps best.pt/last.pt/history.csv current, and returns
what happened; what a finished run does next (test evaluation, artifact, report) is the workflow's business."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from cnnmode.config import Config
from cnnmode.data import DataBundle, TensorLoader
from cnnmode.engine import distributed
from cnnmode.engine.checkpoint import keep_epoch_checkpoint, rng_state, save_checkpoint
from cnnmode.engine.console import Reporter
from cnnmode.engine.device import GpuMeter, peak_memory_mb
from cnnmode.engine.distributed import World
from cnnmode.engine.loop import EpochTally, predict_logits, score, train_one_epoch, headline
from cnnmode.engine.setup import TrainParts
from cnnmode.engine.state import RunState, plain_state, write_history
from cnnmode.errors import RunError
from cnnmode.files import atomic_torch_save
from cnnmode.rundir import RunDir

EpochHook = Callable[[int, dict], None]


@dataclass
class Job:
    """One training run as the engine sees it: config, folder, data, the model's stepping parts, and the console."""
    cfg: Config
    run: RunDir
    data: DataBundle
    parts: TrainParts
    reporter: Reporter
    world: World = World()  # under torchrun: this rank; only rank 0 writes the run folder


@dataclass
class FitResult:
    """How fitting ended: `complete` when every epoch ran (or early stopping ended it), False when stopped on
    request (`stop_after`), leaving a resumable run."""
    state: RunState
    complete: bool
    stopped_early: bool = False


class AgentGone(RunError):
    """The torchrun agent died mid-run; every rank stopped at the same step after saving last.pt."""


def train_size(cfg: Config, full: int, epoch: int) -> int:
    """Image size for `epoch` (1-based) under progressive resizing: linear from train.progressive_size to `full`
    over train.progressive_fraction of the epochs, in steps of 4 pixels."""
    start = cfg.train.progressive_size
    ramp = cfg.train.progressive_fraction * cfg.train.epochs
    if not start or start >= full or epoch > ramp:
        return full
    size = start + (full - start) * (epoch - 1) / ramp
    return min(full, int(round(size / 4)) * 4)


def fit(job: Job, state: RunState, on_epoch: EpochHook | None = None, stop_after: int | None = None) -> FitResult:
    """Train from the epoch after `state.epoch` to train.epochs. `on_epoch(epoch, val)` runs after each epoch's
    checkpoint (an exception it raises ends the run there); `stop_after` ends as if killed after that epoch."""
    cfg, parts = job.cfg, job.parts
    if cfg.train.unfreeze_at and state.epoch >= cfg.train.unfreeze_at:
        _unfreeze(parts.model)  # resumed after the switch: the optimizer already holds the scaled LR
    with GpuMeter(parts.step.device) as gpu:
        return _fit_epochs(job, state, gpu, on_epoch, stop_after)


def _fit_epochs(job: Job, state: RunState, gpu: GpuMeter, on_epoch: EpochHook | None,
                stop_after: int | None) -> FitResult:
    """`fit`'s epochs, with the GPU meter read once per epoch line."""
    cfg, parts, reporter = job.cfg, job.parts, job.reporter
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        _prepare_epoch(job, epoch)
        stats = _train_epoch(job, state, epoch)
        val = validate(job)
        _check_finite(job, epoch, val["loss"])
        if parts.sched_every == "epoch":
            parts.scheduler.step(headline(val)) if cfg.sched.name == "plateau" else parts.scheduler.step()
        improved = _record_epoch(job, state, epoch, stats, val)
        stop = parts.stopper.update(headline(val))
        save_last(job, state)
        if job.world.is_main:
            keep_epoch_checkpoint(job.run.last, job.run.checkpoints, epoch, cfg.train.save_every or
                                  (1 if cfg.train.keep_checkpoints else 0), cfg.train.keep_checkpoints)
        reporter.info(f"epoch {epoch}/{cfg.train.epochs}  train loss {stats['loss']:.4f} acc {100 * stats['acc']:.2f}%"
                      f"  |  val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}%"
                      + (f" mAP {100 * val['map']:.2f}%" if "map" in val else "") + f"{' *' if improved else ''}"
                      f"  |  {stats['time']:.1f}s {stats['img_s']:.0f} img/s"
                      + (f"  |  {busy}" if (busy := gpu.reading()) else ""))
        if on_epoch is not None:
            on_epoch(epoch, val)
        if stop:
            reporter.info(f"early stopping: no validation gain for {parts.stopper.patience} epochs")
            return FitResult(state, complete=True, stopped_early=True)
        if stop_after is not None and epoch >= stop_after:
            return FitResult(state, complete=False)
    return FitResult(state, complete=True)


def validate(job: Job) -> dict:
    """Loss, accuracy and top-5 on the validation split; under torchrun each rank scores its share and the
    logits are gathered, so every rank gets the same figures (and makes the same early-stopping choice)."""
    parts = job.parts
    logits, labels = predict_logits(parts.eval_model, job.data.val, parts.step.precision, parts.step.device,
                                    job.cfg.train.tta)
    total = len(job.data.val.labels)
    return score(distributed.gather_rows(logits, total), distributed.gather_rows(labels, total))


def save_last(job: Job, state: RunState) -> None:
    """last.pt from rank 0, with every rank's RNG and loader position (a collective: all ranks call it)."""
    ranks = distributed.gather_objects({"rng": rng_state(), "partial": state.partial})
    if job.world.is_main:
        save_checkpoint(job.run.last, **job.parts.state_dict(), state=state.__dict__.copy(),
                        config=job.cfg.to_dict(), ranks=ranks, world_size=job.world.size)


def steps_between_checkpoints(setting: int, steps_per_epoch: int) -> int:
    """train.checkpoint_every_steps resolved (-1 = auto: every 500 steps when an epoch has more than 1000)."""
    if setting >= 0:
        return setting
    return 500 if steps_per_epoch > 1000 else 0


def _prepare_epoch(job: Job, epoch: int) -> None:
    """Two-stage fine-tuning, stem freezing, deferred class weights, the epoch's shuffle seed and its image size."""
    cfg, parts = job.cfg, job.parts
    if cfg.train.unfreeze_at and epoch == cfg.train.unfreeze_at + 1:
        _unfreeze(parts.model)
        for group in parts.optimizer.param_groups:
            group["lr"] *= cfg.train.unfreeze_lr_scale
        job.reporter.info(f"stage 2: all layers train from epoch {epoch} at {cfg.train.unfreeze_lr_scale}x the LR")
    _freeze_stem(cfg, parts.model, epoch)
    parts.criterion.set_epoch(epoch)
    job.data.train.set_epoch(epoch)
    if cfg.train.progressive_size and isinstance(job.data.train, TensorLoader):
        job.data.train.img_size = train_size(cfg, job.data.img_size, epoch)


def _unfreeze(model: nn.Module) -> None:
    for p in model.parameters():
        if getattr(p, "_cnnmode_frozen", False):
            p.requires_grad_(True)


def _freeze_stem(cfg: Config, model: nn.Module, epoch: int) -> None:
    """From the epoch after train.freeze_stem_after on, the first conv layer stops training (idempotent)."""
    if cfg.train.freeze_stem_after and epoch > cfg.train.freeze_stem_after:
        stem = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if stem is not None:
            stem.requires_grad_(False)


def _train_epoch(job: Job, state: RunState, epoch: int) -> dict:
    """One epoch with its progress bar, resumed mid-way when the state says so and checkpointed every
    train.checkpoint_every_steps steps; failures become one-line errors that say what to change."""
    cfg, parts, loader = job.cfg, job.parts, job.data.train
    carried = None
    if state.step and state.partial:  # a mid-epoch checkpoint: go on after its last batch
        loader.resume(state.partial["loader"])
        carried = EpochTally(**state.partial["tally"])
    every = steps_between_checkpoints(cfg.train.checkpoint_every_steps, len(loader))

    def on_step(done: int, tally) -> None:
        parts.after_step()
        if every and done % every == 0 and done < len(loader):
            _check_finite(job, epoch, 0.0)
            state.step, state.partial = done, {"loader": loader.state_dict(), "tally": vars(tally())}
            save_last(job, state)
        distributed.kill_if_asked((epoch - 1) * len(loader) + done, job.world)
        if job.world.active and done < len(loader) and distributed.agent_gone():
            state.step, state.partial = done, {"loader": loader.state_dict(), "tally": vars(tally())}
            save_last(job, state)
            raise AgentGone(f"the torchrun agent that started this job is gone (killed?); stopped at step {done} "
                           f"of epoch {epoch} with last.pt saved: continue with --resume {job.run.path}")

    try:
        with job.reporter.epoch_bar(epoch, cfg.train.epochs, len(loader), start=loader.resume_at) as bar:
            stats = train_one_epoch(parts.forward_model, loader, parts.criterion, parts.step, on_progress=bar,
                                    on_step=on_step, carried=carried,
                                    reduce=distributed.all_sum if job.world.active else None)
    except AgentGone:
        raise
    except RunError as e:
        raise RunError(f"{e} at epoch {epoch}; {_kept(job)}; try a lower optim.lr or train.grad_clip=1.0") from None
    except torch.OutOfMemoryError:
        raise RunError(f"{parts.step.device} ran out of memory at train.batch_size={cfg.train.batch_size}, "
                       f"data.img_size={job.data.img_size}; use a smaller train.batch_size (with "
                       "train.accum_steps to keep the effective batch) or a smaller data.img_size") from None
    state.step, state.partial = 0, None
    return stats


def _kept(job: Job) -> str:
    """Where the last good state is, naming only a file that exists."""
    if job.run.last.exists():
        return f"the last good checkpoint is kept in {job.run.last}"
    return "no checkpoint was written (it failed in the first epoch)"


def _check_finite(job: Job, epoch: int, val_loss: float) -> None:
    """Refuse to go on (and so to checkpoint) with NaN/inf weights or outputs, e.g. from an epoch's last optimizer
    step, which the training loss of that epoch cannot show. One host sync per epoch."""
    params = [p.detach() for p in job.parts.model.parameters()]
    finite = bool(torch.stack([torch.isfinite(p).all() for p in params]).all()) if params else True
    if not finite or not math.isfinite(val_loss):
        what = "weights" if not finite else "outputs on the validation split"
        raise RunError(f"the model's {what} became NaN/inf at epoch {epoch}; {_kept(job)}; try a lower optim.lr "
                       "or train.grad_clip=1.0")


def _record_epoch(job: Job, state: RunState, epoch: int, stats: dict, val: dict) -> bool:
    """Update the state, history.csv and best.pt; True when validation accuracy improved.

    Without a validation split best.pt is always the latest epoch, so the test split selects nothing.
    """
    state.epoch = epoch
    state.train_time_s += stats["time"]
    state.note_target(job.cfg.train.target_accuracy, headline(val))
    state.history.append({
        "epoch": epoch, "lr": job.parts.optimizer.param_groups[0]["lr"], "train_loss": round(stats["loss"], 5),
        "train_acc": round(stats["acc"], 5), "val_loss": round(val["loss"], 5), "val_acc": round(val["accuracy"], 5),
        **({"val_map": val["map"]} if "map" in val else {}),
        "epoch_time_s": round(stats["time"], 2), "images_per_s": round(stats["img_s"], 1),
        "peak_mem_mb": round(peak_memory_mb(job.parts.step.device), 1)})
    if job.world.is_main:
        write_history(job.run.history, state.history)
    if headline(val) <= state.best_acc and not job.data.val_is_test:
        return False
    state.best_acc, state.best_epoch = headline(val), epoch
    if job.world.is_main:
        atomic_torch_save({"model": plain_state(job.parts.eval_model), "epoch": epoch, "val_acc": headline(val)},
                          job.run.best)
    return True
