"""`train()`: the whole run, from config to run folder. The CLI is a thin layer over it.

Order matters for what a failure leaves behind: the device, the data and the model are resolved first, and
the run folder is made only once the run can start, so a bad `data.path` or device leaves no empty folder.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from cnnmode.artifact import load_artifact
from cnnmode.config import Config, check_for_size, config_from_dict, dump_yaml, parse_override, pick_base, \
    read_yaml, resolve_config, set_key
from cnnmode.data import build_data
from cnnmode.engine import distributed, qat
from cnnmode.engine.checkpoint import load_checkpoint, restore_rank
from cnnmode.engine.console import Reporter
from cnnmode.engine.distributed import World
from cnnmode.engine.device import pick_device, pick_precision, reset_peak_memory, set_determinism
from cnnmode.engine.fit import EpochHook, Job, fit
from cnnmode.data.labels import counts as label_counts
from cnnmode.engine.losses import class_weights, loss_kind, multilabel_weights
from cnnmode.engine.optim import LENGTH_BOUND
from cnnmode.engine.profile import profile_steps
from cnnmode.engine.setup import build_run_model, make_parts
from cnnmode.engine.state import RunState
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir, new_run_name
from cnnmode.workflows.results import finish_run
from cnnmode.workflows.tracking import tracked


def train(cfg: Config | None = None, *, recipe: str | None = None, config_file: str | None = None,
          overrides: list[str] | tuple[str, ...] = (), resume: str | Path | None = None, quiet: bool = False,
          stop_after_epochs: int | None = None, on_epoch: EpochHook | None = None) -> Path:
    """Train a model and return its run folder.

    Give a Config, or a recipe name / YAML file plus `key=value` overrides (neither: the config defaults), or
    `resume` (a run folder; only `train.epochs` may then be overridden). `stop_after_epochs` ends the session
    early as if killed, leaving a resumable run (used by tests). `on_epoch(epoch, val)` is called after each
    epoch's checkpoint with that epoch's validation metrics; an exception it raises (e.g. a search's pruning
    signal) ends the run there.
    """
    joined = not distributed.world().active
    world = distributed.start()  # a no-op unless torchrun launched this process
    reporter = Reporter(quiet, silent=not world.is_main)
    try:
        if resume is not None and not str(resume).strip():
            raise UsageError("--resume needs a run folder (got an empty path)")
        restarted = None
        if resume:
            run = RunDir(resume)
            cfg = resume_config(run, overrides)
        else:
            cfg = cfg or resolve_config(pick_base(recipe, config_file), overrides)
            restarted = restarted_run(cfg, world)
            run = RunDir(restarted) if restarted else planned_run_dir(cfg, world)
            if restarted:
                cfg = resume_config(run, ())
                reporter.info(f"elastic restart {distributed.restart_count()}: going on from {run.last}")
        return _run(cfg, run, reporter, world, resume=bool(resume or restarted), stop_after=stop_after_epochs,
                    on_epoch=on_epoch)
    finally:
        reporter.close()
        if joined and world.active:
            distributed.stop()


def restarted_run(cfg: Config, world: World) -> Path | None:
    """Under torchrun's elastic restarts (--max-restarts), the run folder that the failed attempt left, to go on
    from its last.pt without a manual --resume; None on a first attempt or outside torchrun."""
    if not world.active or distributed.restart_count() == 0:
        return None
    run = planned_run_dir(cfg, world, refuse=False)
    resumable = distributed.broadcast(run.is_resumable())  # rank 0's view: other machines may not see the folder
    return run.path if resumable else None


def planned_run_dir(cfg: Config, world: World = World(), refuse: bool = True) -> RunDir:
    """The folder a new run will write to: `run.dir/run.name` (default name: recipe or model and the time; under
    torchrun the launch's --rdzv-id, since every rank and every restart must agree on it)."""
    name = distributed.shared_run_name(cfg.run.name, world)
    run = RunDir(Path(cfg.run.dir) / (name or new_run_name(cfg.recipe, cfg.model.name)))
    if refuse:
        _refuse_existing(run)
    return run


def _refuse_existing(run: RunDir) -> None:
    if run.is_resumable():
        raise UsageError(f"{run} already holds a run; resume it with --resume {run} or pick another run.name")


def resume_config(run: RunDir, overrides) -> Config:
    """The config of the run in `run`, with `train.epochs` changed if asked (the only key that may change)."""
    if not run.is_resumable():
        raise UsageError(f"cannot resume {run}: no last.pt there (is it a run folder?)")
    cfg = config_from_dict(read_yaml(run.config))
    for text in overrides:
        key, value = parse_override(text)
        if key != "train.epochs":
            raise UsageError(f"on --resume only train.epochs can change (got {key}); start a new run for other changes")
        old = cfg.train.epochs
        set_key(cfg, key, value)
        if cfg.train.epochs != old and cfg.sched.name in LENGTH_BOUND:
            raise UsageError(f"this run's '{cfg.sched.name}' schedule was laid out for {old} epochs and cannot be "
                             f"stretched to {cfg.train.epochs}; start a new run with "
                             f"model.pretrained={run.best} instead")
    return cfg


def _run(cfg: Config, run: RunDir, reporter: Reporter, world: World, resume: bool, stop_after: int | None,
         on_epoch: EpochHook | None) -> Path:
    device = distributed.rank_device(world, cfg.run.device) or pick_device(cfg.run.device)
    _set_threads(cfg, world)
    reset_peak_memory(device)
    precision = pick_precision("off" if cfg.train.qat else cfg.train.amp, device)  # fake-quant runs in fp32
    set_determinism(cfg.train.seed + world.rank, cfg.train.deterministic)  # rank 0's weights reach every rank
    reporter.info(f"{'resuming' if resume else 'run'} {run}  |  device {device}, {precision.name}, "
                  f"{torch.get_num_threads()} threads" + (f"  |  rank 0 of {world.size}" if world.active else ""))
    _check_data_parallel(cfg, world)
    teacher = load_artifact(cfg.train.distill_teacher, device) if cfg.train.distill_teacher else None
    with distributed.main_first(world):  # rank 0 fills the data cache, the others read it
        data = build_data(cfg, device, norm=(teacher.preprocess["mean"], teacher.preprocess["std"]) if teacher else None)
    if teacher is not None and teacher.multilabel != data.multilabel:
        raise UsageError("the teacher and this data differ in task (one is multi-label); distil between models "
                         "of the same task")
    if teacher is not None and (teacher.classes != data.classes or teacher.preprocess["img_size"] != data.img_size):
        raise UsageError(f"the teacher was trained on {teacher.classes} at {teacher.preprocess['img_size']}px; "
                         f"this data has {data.classes} at {data.img_size}px")
    check_for_size(cfg, data.img_size)
    _check_task(cfg, data.multilabel)
    _describe_data(data, reporter, cfg)
    if world.active:
        data.train, data.val = data.train.sharded(world.rank, world.size), data.val.sharded(world.rank, world.size)
    float_model, model_args = build_run_model(cfg, data, reporter.info, fresh=not resume)
    model = qat.prepare(float_model, cfg.model.name, model_args) if cfg.train.qat else float_model

    with run.locked() if world.is_main else nullcontext():  # from here on the run exists, and is this job's alone
        if world.is_main:
            if not resume:
                _refuse_existing(run)  # another process may have run here since we looked
            reporter.attach_log(run.log)
            for stale in run.remove_stale_temp_files():
                reporter.log_only(f"removed {stale.name}, left by a write that was killed")
            atomic_write_text(run.config, dump_yaml(cfg))
        weights, pos_weight = _loss_weights(cfg, data, reporter)
        parts = make_parts(cfg, model, steps_per_epoch=len(data.train), device=device, precision=precision,
                           teacher=teacher.model if teacher else None, weights=weights, world=world,
                           multilabel=data.multilabel, pos_weight=pos_weight)
        state = _restore(run, parts, reporter, cfg, world) if resume else RunState()
        job = Job(cfg, run, data, parts, reporter, world)
        if cfg.train.profile:
            profile_steps(cfg, parts, data, run, reporter)
        with tracked(job, resume) as on_row:
            def hook(epoch: int, val: dict) -> None:
                on_row(epoch, state.history[-1])
                if on_epoch is not None:
                    on_epoch(epoch, val)

            result = fit(job, state, hook, stop_after)
            if result.complete and world.is_main:
                finish_run(job, result, model_args, float_model)
                on_row(None, None)
    return run.path


def _set_threads(cfg: Config, world: World) -> None:
    """run.threads, or under torchrun the machine's cores shared among its ranks (never oversubscribed)."""
    threads = cfg.run.threads or (distributed.cpu_threads(world) if world.active else 0)
    if threads:
        torch.set_num_threads(threads)


def _check_data_parallel(cfg: Config, world: World) -> None:
    """What a data-parallel job needs before any work: a global batch that divides among the ranks."""
    if not world.active:
        return
    if cfg.train.batch_size % world.size:
        raise UsageError(f"train.batch_size={cfg.train.batch_size} is the global batch and must divide evenly "
                         f"among the {world.size} ranks; use a multiple of {world.size}")
    if cfg.train.profile:
        raise UsageError("train.profile=true profiles a single process; run it without torchrun")


def _label_sets(labels: torch.Tensor) -> str:
    per_image = labels.long().sum(1)
    return (f"{per_image.double().mean():.2f} labels per training image, {int((per_image == 0).sum())} with none, "
            f"at most {int(per_image.max())}")


def _describe_data(data, reporter: Reporter, cfg: Config) -> None:
    sizes = data.sizes()
    reporter.info(f"data {data.source}: {len(data.classes)} classes, train {sizes['train']}, val {sizes['val']}, "
                  f"test {sizes['test']}, {data.img_size}px x{data.channels}")
    if data.val_is_test:
        reporter.warn("data.val_split=0: no validation split; per-epoch figures are on the test split and the "
                      "last epoch is kept (no selection on test)")
    if data.multilabel:
        reporter.info(f"task: multi-label ({_label_sets(data.train.labels)}); sigmoid outputs, "
                      f"loss {cfg.train.loss if cfg.train.loss != 'auto' else 'bce'}")
    counts = label_counts(data.train.labels, len(data.classes))
    if counts.min() > 0 and counts.max() >= 10 * counts.min():
        plain = (cfg.data.sampler, cfg.train.class_weights, cfg.train.loss) in (("random", "none", "ce"),
                                                                                ("random", "none", "auto"))
        hint = "; data.sampler=balanced or train.class_weights=auto may help" if plain else ""
        reporter.info(f"classes are imbalanced ({counts.max() / counts.min():.0f}:1 in train){hint}")
    if data.skipped:
        reporter.warn(f"skipped {len(data.skipped)} unreadable or non-image file(s); see train.log")
        for name, reason in data.skipped:
            reporter.log_only(f"skipped {name}: {reason}")


def _check_task(cfg: Config, multilabel: bool) -> None:
    """Refuse, before the run folder exists, keys that cannot apply to the data's task."""
    loss_kind(cfg.train.loss, multilabel)
    if multilabel and cfg.train.distill_teacher:
        raise UsageError("train.distill_teacher distils softmax outputs and this data is multi-label; leave "
                         "train.distill_teacher empty")
    if multilabel and cfg.train.qat:
        raise UsageError("train.qat checks int8 accuracy as single-label top-1 and this data is multi-label; "
                         "export int8 after training instead (cnnmode export RUN --format onnx-int8)")


def _loss_weights(cfg: Config, data, reporter: Reporter) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(per-class loss weights, per-label positive weights) from train.class_weights and the training split's
    counts; said in the log when used."""
    counts = label_counts(data.train.labels, len(data.classes)).tolist()
    if data.multilabel:
        weights, pos_weight = multilabel_weights(cfg.train.class_weights, counts, len(data.train.labels),
                                                 data.classes)
    else:
        weights, pos_weight = class_weights(cfg.train.class_weights, counts, data.classes), None
    for name, values in (("class weights", weights), ("positive weights", pos_weight)):
        if values is not None:
            pairs = ", ".join(f"{c} {w:.2f}" for c, w in zip(data.classes, values.tolist()))
            reporter.log_only(f"{name} ({cfg.train.class_weights}): {pairs}")
    return weights, pos_weight


def _restore(run: RunDir, parts, reporter: Reporter, cfg: Config, world: World) -> RunState:
    """The run's last.pt (read by rank 0 and sent to every rank) loaded into the parts, and this rank's state
    and RNG (`restore_rank`)."""
    ckpt = distributed.broadcast(load_checkpoint(run.last) if world.is_main else None)
    parts.load_state_dict(ckpt)
    state, note = restore_rank(ckpt, world, cfg.train.seed)
    if note:
        reporter.info(note)
    where = f"step {state.step} of epoch {state.epoch + 1}" if state.step else f"epoch {state.epoch}"
    reporter.info(f"resumed after {where} of {cfg.train.epochs}")
    return state
