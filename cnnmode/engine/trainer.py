"""`train()`: the whole run, from config to run folder. The CLI is a thin layer over it."""
from __future__ import annotations

import csv
import io
import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cnnmode.config import Config, build_config, config_from_dict, dump_yaml, parse_override, read_yaml, set_key
from cnnmode.data import DataBundle, TensorLoader, build_data
from cnnmode.deploy.artifact import save_artifact
from cnnmode.engine.callbacks import EarlyStopping
from cnnmode.engine.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from cnnmode.engine.console import Reporter
from cnnmode.engine.device import peak_memory_mb, pick_device, pick_precision, reset_peak_memory, set_determinism
from cnnmode.engine.loop import StepSetup, evaluate, predict_logits, train_one_epoch
from cnnmode.engine.optim import LENGTH_BOUND, build_optimizer, build_scheduler
from cnnmode.errors import RunError, UsageError
from cnnmode.evaluation.plots import predictions_figure, training_curves
from cnnmode.files import atomic_torch_save, atomic_write_text, torch_load
from cnnmode.models import build_model, head_module, resolve_stem

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "images_per_s",
                  "peak_mem_mb"]


@dataclass
class RunState:
    """Progress that a checkpoint carries besides weights and optimizer."""
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    train_time_s: float = 0.0
    time_to_target_s: float | None = None


def train(cfg: Config | None = None, *, recipe: str | None = None, config_file: str | None = None,
          overrides: list[str] | tuple[str, ...] = (), resume: str | Path | None = None, quiet: bool = False,
          stop_after_epochs: int | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> Path:
    """Train a model and return its run folder.

    Give a Config, or a recipe name / YAML file plus `key=value` overrides, or `resume` (a run folder; only
    `train.epochs` may then be overridden). `stop_after_epochs` ends the session early as if killed, leaving
    a resumable run (used by tests). `on_epoch(epoch, val)` is called after each epoch's checkpoint with that
    epoch's validation metrics; an exception it raises (e.g. a search's pruning signal) ends the run there.
    """
    reporter = Reporter(quiet)
    try:
        if resume:
            run_dir = Path(resume)
            cfg = _resume_config(run_dir, overrides)
        else:
            cfg = cfg or build_config(recipe, config_file, overrides, cuda=torch.cuda.is_available())
            run_dir = _new_run_dir(cfg)
        return _run(cfg, run_dir, reporter, resume=bool(resume), stop_after=stop_after_epochs, on_epoch=on_epoch)
    finally:
        reporter.close()


def _new_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.recipe or cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.run.dir) / name
    if (run_dir / "last.pt").exists():
        raise UsageError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another run.name")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _resume_config(run_dir: Path, overrides) -> Config:
    if not (run_dir / "last.pt").is_file():
        raise UsageError(f"cannot resume {run_dir}: no last.pt there (is it a run folder?)")
    cfg = config_from_dict(read_yaml(run_dir / "config.yaml"))
    for text in overrides:
        key, value = parse_override(text)
        if key != "train.epochs":
            raise UsageError(f"on --resume only train.epochs can change (got {key}); start a new run for other changes")
        old = cfg.train.epochs
        set_key(cfg, key, value)
        if cfg.train.epochs != old and cfg.sched.name in LENGTH_BOUND:
            raise UsageError(f"this run's '{cfg.sched.name}' schedule was laid out for {old} epochs and cannot be "
                             f"stretched to {cfg.train.epochs}; start a new run with "
                             f"model.pretrained={run_dir / 'best.pt'} instead")
    return cfg


def _environment(device: torch.device, precision_name: str) -> dict:
    import torchvision

    from cnnmode import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cnnmode": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "git_commit": commit, "device": str(device),
            "precision": precision_name, "threads": torch.get_num_threads(), "platform": platform.platform()}


def load_pretrained(model: nn.Module, source: str, reporter: Reporter) -> None:
    """Load weights from an artifact, checkpoint, state dict, or torchvision weights name; skip shape mismatches."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.pt"
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
    reporter.info(f"pretrained: loaded {len(usable)}/{len(own)} tensors from {source}"
                  + (f"; re-initialised {', '.join(dropped[:6])}{' ...' if len(dropped) > 6 else ''}" if dropped else ""))


def _sample_for_init(data: DataBundle, n: int = 5000) -> torch.Tensor:
    """Normalised, unaugmented training images (for data-dependent initialisation)."""
    if isinstance(data.train, TensorLoader):
        loader = data.train
        idx = torch.randperm(len(loader.labels), generator=torch.Generator().manual_seed(0))[:n]
        x = loader.images[idx].float().to(loader.device)
        if loader.img_size and x.shape[-1] != loader.img_size:
            x = torch.nn.functional.interpolate(x, size=(loader.img_size,) * 2, mode="bilinear")
        return ((x - loader.mean) / loader.std).cpu()
    return next(iter(data.val))[0].float().cpu()


def build_run_model(cfg: Config, data: DataBundle, reporter: Reporter, fresh: bool = True) -> tuple[nn.Module, dict]:
    """The registry model for `cfg` and `data`: data-dependent init, pretrained weights and freezing applied."""
    args = {"num_classes": len(data.classes), "in_channels": data.channels,
            "stem": resolve_stem(cfg.model.stem, data.img_size), "width": cfg.model.width}
    model = build_model(cfg.model.name, **args)
    if fresh and hasattr(model, "init_from_data"):
        model.init_from_data(_sample_for_init(data))
    if fresh and cfg.model.pretrained:
        load_pretrained(model, cfg.model.pretrained, reporter)
    if cfg.model.freeze == "backbone":
        head = {id(p) for p in head_module(model).parameters()}
        for p in model.parameters():
            if p.requires_grad and id(p) not in head:
                p.requires_grad_(False)
                p._cnnmode_frozen = True  # unfrozen by train.unfreeze_at; the model's own fixed weights stay fixed
    return model, args


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


def _load_teacher(cfg: Config, device: torch.device):
    if not cfg.train.distill_teacher:
        return None
    from cnnmode.deploy.artifact import load_artifact

    return load_artifact(cfg.train.distill_teacher, device)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())


def _run(cfg: Config, run_dir: Path, reporter: Reporter, resume: bool, stop_after: int | None,
         on_epoch: Callable[[int, dict], None] | None = None) -> Path:
    device = pick_device(cfg.run.device)
    reset_peak_memory(device)
    precision = pick_precision("off" if cfg.train.qat else cfg.train.amp, device)  # fake-quant runs in fp32
    set_determinism(cfg.train.seed, cfg.train.deterministic)
    reporter.attach_log(run_dir / "train.log")
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    reporter.info(f"{'resuming' if resume else 'run'} {run_dir}  |  device {device}, {precision.name}, "
                  f"{torch.get_num_threads()} threads")

    teacher = _load_teacher(cfg, device)
    data = build_data(cfg, device, norm=(teacher.preprocess["mean"], teacher.preprocess["std"]) if teacher else None)
    if teacher is not None and (teacher.classes != data.classes or teacher.preprocess["img_size"] != data.img_size):
        raise UsageError(f"the teacher was trained on {teacher.classes} at {teacher.preprocess['img_size']}px; "
                         f"this data has {data.classes} at {data.img_size}px")
    sizes = data.sizes()
    reporter.info(f"data {data.source}: {len(data.classes)} classes, train {sizes['train']}, val {sizes['val']}, "
                  f"test {sizes['test']}, {data.img_size}px x{data.channels}")
    if data.val_is_test:
        reporter.warn("data.val_split=0: no validation split; per-epoch figures are on the test split and the "
                      "last epoch is kept (no selection on test)")
    if data.skipped:
        reporter.warn(f"skipped {len(data.skipped)} unreadable or non-image file(s); see train.log")
        for name, reason in data.skipped:
            reporter.log_only(f"skipped {name}: {reason}")

    model, model_args = build_run_model(cfg, data, reporter, fresh=not resume)
    float_model = model
    if cfg.train.qat:
        from cnnmode.engine import qat

        model = qat.prepare(model, cfg.model.name, model_args)
    parts = _make_parts(cfg, model, len(data.train), device, precision)
    if teacher is not None:
        parts.setup.teacher = teacher.model.to(device).eval()
        parts.setup.temperature, parts.setup.alpha = cfg.train.distill_temperature, cfg.train.distill_alpha
    state = _restore(run_dir, parts, reporter, cfg) if resume else RunState()
    if cfg.train.profile:
        _profile_steps(parts, data, run_dir, reporter)
    board = _tensorboard(run_dir) if cfg.run.tensorboard else None
    stopped_early = False
    if cfg.train.unfreeze_at and state.epoch >= cfg.train.unfreeze_at:
        _unfreeze(model)  # resumed after the switch: the optimizer already holds the scaled LR
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        if cfg.train.unfreeze_at and epoch == cfg.train.unfreeze_at + 1:
            _unfreeze(model)
            for group in parts.optimizer.param_groups:
                group["lr"] *= cfg.train.unfreeze_lr_scale
            reporter.info(f"stage 2: all layers train from epoch {epoch} at {cfg.train.unfreeze_lr_scale}x the LR")
        _freeze_stem(cfg, model, epoch)
        data.train.set_epoch(epoch)
        _set_train_size(cfg, data, epoch)
        stats = _train_epoch(cfg, run_dir, reporter, data, parts, epoch)
        val = evaluate(parts.eval_model, data.val, precision, device, cfg.train.tta)  # flips only: cheap
        if parts.sched_every == "epoch":
            parts.scheduler.step(val["accuracy"]) if cfg.sched.name == "plateau" else parts.scheduler.step()
        improved = _record_epoch(cfg, run_dir, state, parts, epoch, stats, val, device, board,
                                 keep_last=data.val_is_test)
        stop = parts.stopper.update(val["accuracy"])
        save_checkpoint(run_dir / "last.pt", **parts.state_dict(), state=state.__dict__.copy(), config=cfg.to_dict())
        reporter.info(f"epoch {epoch}/{cfg.train.epochs}  train loss {stats['loss']:.4f} acc {100 * stats['acc']:.2f}%"
                      f"  |  val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}%{' *' if improved else ''}"
                      f"  |  {stats['time']:.1f}s {stats['img_s']:.0f} img/s")
        if on_epoch is not None:
            on_epoch(epoch, val)
        if stop:
            reporter.info(f"early stopping: no validation gain for {parts.stopper.patience} epochs")
            stopped_early = True
            break
        if stop_after is not None and epoch >= stop_after:
            return run_dir
    _finish(cfg, run_dir, reporter, data, parts.eval_model, model_args, precision, device, state, stopped_early,
            float_model)
    return run_dir


@dataclass
class Parts:
    """The model and everything that steps with it; `state_dict` is what last.pt stores besides RunState."""
    model: nn.Module
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    sched_every: str
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None
    stopper: EarlyStopping
    setup: StepSetup

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.forward_model

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "early_stop": self.stopper.state_dict()}

    def load_state_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.stopper.load_state_dict(ckpt["early_stop"])


def _make_parts(cfg: Config, model: nn.Module, steps_per_epoch: int, device: torch.device, precision) -> Parts:
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device)
    forward_model = torch.compile(model) if cfg.train.compile else model
    optimizer = build_optimizer(cfg, model)
    scheduler, sched_every = build_scheduler(cfg, optimizer, max(1, steps_per_epoch // cfg.train.accum_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    ema = None
    if cfg.train.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.train.ema), use_buffers=True)
    setup = StepSetup(optimizer, precision, device, scaler, cfg.train.label_smoothing, cfg.train.accum_steps,
                      cfg.train.grad_clip, scheduler if sched_every == "step" else None, ema)
    stopper = EarlyStopping(cfg.train.early_stop_patience, cfg.train.early_stop_min_delta)
    return Parts(model, forward_model, optimizer, scheduler, sched_every, scaler, ema, stopper, setup)


def _restore(run_dir: Path, parts: Parts, reporter: Reporter, cfg: Config) -> RunState:
    ckpt = load_checkpoint(run_dir / "last.pt")
    parts.load_state_dict(ckpt)
    set_rng_state(ckpt["rng"])
    state = RunState(**ckpt["state"])
    reporter.info(f"resumed after epoch {state.epoch} of {cfg.train.epochs}")
    return state


def _train_epoch(cfg: Config, run_dir: Path, reporter: Reporter, data: DataBundle, parts: Parts, epoch: int) -> dict:
    """One epoch with its progress bar; failures become one-line errors that say what to change."""
    try:
        with reporter.epoch_bar(epoch, cfg.train.epochs, len(data.train)) as bar:
            return train_one_epoch(parts.forward_model, data.train, parts.setup, bar)
    except RunError as e:
        raise RunError(f"{e} at epoch {epoch}; the last good checkpoint is kept in {run_dir / 'last.pt'}; "
                       "try a lower optim.lr or train.grad_clip=1.0") from None
    except torch.OutOfMemoryError:
        raise RunError(f"{parts.setup.device} ran out of memory at train.batch_size={cfg.train.batch_size}, "
                       f"data.img_size={data.img_size}; use a smaller train.batch_size (with "
                       "train.accum_steps to keep the effective batch) or a smaller data.img_size") from None


def train_size(cfg: Config, full: int, epoch: int) -> int:
    """Image size for `epoch` (1-based) under progressive resizing: linear from train.progressive_size to `full`
    over train.progressive_fraction of the epochs, in steps of 4 pixels."""
    start = cfg.train.progressive_size
    ramp = cfg.train.progressive_fraction * cfg.train.epochs
    if not start or start >= full or epoch > ramp:
        return full
    size = start + (full - start) * (epoch - 1) / ramp
    return min(full, int(round(size / 4)) * 4)


def _set_train_size(cfg: Config, data: DataBundle, epoch: int) -> None:
    if cfg.train.progressive_size and isinstance(data.train, TensorLoader):
        data.train.img_size = train_size(cfg, data.img_size, epoch)


def _note_target(cfg: Config, state: RunState, accuracy: float) -> None:
    """Record the training time at which `accuracy` first reaches train.target_accuracy."""
    target = cfg.train.target_accuracy
    if target and state.time_to_target_s is None and accuracy >= target:
        state.time_to_target_s = round(state.train_time_s, 2)


def _record_epoch(cfg: Config, run_dir: Path, state: RunState, parts: Parts, epoch: int, stats: dict, val: dict,
                  device: torch.device, board, keep_last: bool = False) -> bool:
    """Update history, history.csv, TensorBoard and best.pt; True when validation accuracy improved.

    `keep_last` (no validation split): best.pt is always the latest epoch, so the test split selects nothing.
    """
    state.epoch = epoch
    state.train_time_s += stats["time"]
    _note_target(cfg, state, val["accuracy"])
    state.history.append({
        "epoch": epoch, "lr": parts.optimizer.param_groups[0]["lr"], "train_loss": round(stats["loss"], 5),
        "train_acc": round(stats["acc"], 5), "val_loss": round(val["loss"], 5), "val_acc": round(val["accuracy"], 5),
        "epoch_time_s": round(stats["time"], 2), "images_per_s": round(stats["img_s"], 1),
        "peak_mem_mb": round(peak_memory_mb(device), 1)})
    _write_history(run_dir, state.history)
    if board is not None:
        for key, value in state.history[-1].items():
            if key != "epoch":
                board.add_scalar(key, value, epoch)
        board.flush()
    if val["accuracy"] <= state.best_acc and not keep_last:
        return False
    state.best_acc, state.best_epoch = val["accuracy"], epoch
    atomic_torch_save({"model": _plain_state(parts.eval_model), "epoch": epoch, "val_acc": val["accuracy"]},
                      run_dir / "best.pt")
    return True


def _profile_steps(parts: "Parts", data: DataBundle, run_dir: Path, reporter: Reporter, steps: int = 5) -> None:
    """Trace a few training steps (on a copy of the model) into profile_trace.json and print the top operators."""
    import copy
    import itertools

    from cnnmode.engine.checkpoint import rng_state

    saved_rng = rng_state()  # profiling must not change the run that follows
    model = copy.deepcopy(parts.model)
    setup = StepSetup(torch.optim.SGD(model.parameters(), lr=0.0), parts.setup.precision, parts.setup.device,
                      torch.amp.GradScaler(parts.setup.device.type, enabled=False), parts.setup.label_smoothing)
    data.train.set_epoch(0)
    loader = list(itertools.islice(iter(data.train), steps + 1))
    train_one_epoch(model, loader[:1], setup)  # warm-up outside the trace
    activities = [torch.profiler.ProfilerActivity.CPU]
    if parts.setup.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        train_one_epoch(model, loader[1:], setup)
    set_rng_state(saved_rng)
    prof.export_chrome_trace(str(run_dir / "profile_trace.json"))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    atomic_write_text(run_dir / "profile_top_ops.txt", table)
    reporter.info(f"profile of {len(loader) - 1} steps: {run_dir / 'profile_trace.json'} (open in chrome://tracing "
                  f"or Perfetto); top operators by self CPU time:\n{table}")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("run.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _plain_state(model: nn.Module) -> dict:
    module = getattr(model, "_orig_mod", model)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _finish(cfg: Config, run_dir: Path, reporter: Reporter, data: DataBundle, eval_model: nn.Module,
            model_args: dict, precision, device: torch.device, state: RunState, stopped_early: bool,
            float_model: nn.Module) -> None:
    """Best weights → test evaluation (eval/), metrics.json, artifact, plots, report, summary."""
    from cnnmode.evaluation.evaluate import evaluate_model, gather_images
    from cnnmode.evaluation.report import write_report

    best = torch_load(run_dir / "best.pt")
    getattr(eval_model, "_orig_mod", eval_model).load_state_dict(best["model"])
    ev = evaluate_model(eval_model, data.test, data.classes, data.mean, data.std, run_dir / "eval", precision,
                        device, cfg.train.tta, cfg.train.seed, cfg.train.tta_translate)
    test = {k: ev[k] for k in ("accuracy", "top5", "loss", "f1_macro", "ece")}
    if data.val_is_test:  # the final model (with shift TTA) may be the first to reach the target
        _note_target(cfg, state, test["accuracy"])
    params = sum(p.numel() for p in eval_model.parameters())
    train_imgs = len(data.train) * cfg.train.batch_size * len(state.history)
    val = None if data.val_is_test else {"accuracy": state.best_acc}
    metrics = {"test": test, "val": val, "best_epoch": state.best_epoch,
               "epochs_run": state.epoch, "stopped_early": stopped_early,
               "train_time_s": round(state.train_time_s, 2), "time_to_target_s": state.time_to_target_s,
               "target_accuracy": cfg.train.target_accuracy or None,
               "images_per_s": round(train_imgs / max(state.train_time_s, 1e-9), 1), "params": params,
               "classes": data.classes, "skipped_files": len(data.skipped), "seed": cfg.train.seed,
               "environment": _environment(device, precision.name)}
    artifact_model = getattr(eval_model, "_orig_mod", eval_model)
    if cfg.train.qat:
        metrics["qat"] = _finish_qat(eval_model, float_model, data, run_dir)
        artifact_model = float_model
        rows_qat = [("int8 (QAT) accuracy", f"{100 * metrics['qat']['int8_accuracy']:.2f}%")]
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    preprocess = {"img_size": data.img_size, "mean": data.mean, "std": data.std, "channels": data.channels}
    save_artifact(run_dir / "model.pt", artifact_model, cfg.model.name, model_args,
                  data.classes, preprocess, {"test": test, "recipe": cfg.recipe, "best_epoch": state.best_epoch})
    training_curves(state.history, run_dir / "plots" / "training_curves.png")
    pick = torch.randperm(len(data.test.labels), generator=torch.Generator().manual_seed(cfg.train.seed))[:6]
    images = gather_images(data.test, pick.tolist())
    logits, _ = predict_logits(eval_model, [(images.to(device), data.test.labels[pick])], precision, device)
    predictions_figure(state.history, images, data.test.labels[pick], logits.softmax(1),
                       data.classes, data.mean, data.std, run_dir / "plots" / "predictions.png")
    write_report(run_dir)
    rows = [("test accuracy", f"{100 * test['accuracy']:.2f}%"), ("test top-5", f"{100 * test['top5']:.2f}%"),
            ("test F1 macro", f"{100 * test['f1_macro']:.2f}%"), ("test loss", f"{test['loss']:.4f}"),
            ("kept epoch", f"{state.best_epoch} (last; no validation split)") if data.val_is_test else
            ("best epoch", f"{state.best_epoch} (val {100 * state.best_acc:.2f}%)"),
            ("train time", f"{state.train_time_s:.1f} s ({metrics['images_per_s']:.0f} img/s)"),
            ("parameters", f"{params / 1e6:.2f} M"), ("report", str(run_dir / "report.html"))]
    if cfg.train.qat:
        rows += rows_qat
    if cfg.train.target_accuracy:
        ttt = state.time_to_target_s
        rows.append((f"time to {100 * cfg.train.target_accuracy:.1f}% val",
                     f"{ttt:.1f} s" if ttt is not None else "not reached"))
    reporter.table(f"{cfg.recipe or cfg.model.name}: results", rows)


@torch.no_grad()
def _finish_qat(qat_model: nn.Module, float_model: nn.Module, data: DataBundle, run_dir: Path) -> dict:
    """Float weights into the registry model; the int8 model converted, scored on test, saved as TorchScript."""
    from cnnmode.engine import qat

    float_model.load_state_dict(qat.float_state(qat_model, float_model))
    int8 = qat.convert(qat_model)
    correct = total = 0
    for x, y in data.test:
        correct += int((int8(x.cpu().contiguous()).argmax(1) == y.cpu()).sum())
        total += len(y)
    path = run_dir / "export" / "model-int8-qat.ts"
    path.parent.mkdir(exist_ok=True)
    example = next(iter(data.test))[0][:2].cpu().contiguous()
    torch.jit.trace(int8, example).save(str(path))
    return {"int8_accuracy": correct / max(total, 1), "file": str(path), "backend": "x86"}
