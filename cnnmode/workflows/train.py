"""`train()`: the whole run, from config to run folder. The CLI is a thin layer over it.

Order matters for what a failure leaves behind: the device, the data and the model are resolved first, and
the run folder is made only once the run can start, so a bad `data.path` or device leaves no empty folder.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from cnnmode.artifact import load_artifact
from cnnmode.config import Config, check_for_size, config_from_dict, dump_yaml, parse_override, pick_base, \
    read_yaml, resolve_config, set_key
from cnnmode.data import build_data
from cnnmode.engine import qat
from cnnmode.engine.checkpoint import load_checkpoint, set_rng_state
from cnnmode.engine.console import Reporter
from cnnmode.engine.device import pick_device, pick_precision, reset_peak_memory, set_determinism
from cnnmode.engine.fit import EpochHook, Job, fit
from cnnmode.engine.losses import class_weights
from cnnmode.engine.optim import LENGTH_BOUND
from cnnmode.engine.profile import profile_steps
from cnnmode.engine.setup import build_run_model, make_parts
from cnnmode.engine.state import RunState
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir, new_run_name
from cnnmode.workflows.results import finish_run
from cnnmode.workflows.tracking import make_trackers


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
    reporter = Reporter(quiet)
    try:
        if resume is not None and not str(resume).strip():
            raise UsageError("--resume needs a run folder (got an empty path)")
        if resume:
            run = RunDir(resume)
            cfg = resume_config(run, overrides)
        else:
            cfg = cfg or resolve_config(pick_base(recipe, config_file), overrides)
            run = planned_run_dir(cfg)
        return _run(cfg, run, reporter, resume=bool(resume), stop_after=stop_after_epochs, on_epoch=on_epoch)
    finally:
        reporter.close()


def planned_run_dir(cfg: Config) -> RunDir:
    """The folder a new run will write to: `run.dir/run.name` (default name: recipe or model and the time)."""
    run = RunDir(Path(cfg.run.dir) / (cfg.run.name or new_run_name(cfg.recipe, cfg.model.name)))
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


def _run(cfg: Config, run: RunDir, reporter: Reporter, resume: bool, stop_after: int | None,
         on_epoch: EpochHook | None) -> Path:
    device = pick_device(cfg.run.device)
    reset_peak_memory(device)
    precision = pick_precision("off" if cfg.train.qat else cfg.train.amp, device)  # fake-quant runs in fp32
    set_determinism(cfg.train.seed, cfg.train.deterministic)
    reporter.info(f"{'resuming' if resume else 'run'} {run}  |  device {device}, {precision.name}, "
                  f"{torch.get_num_threads()} threads")
    teacher = load_artifact(cfg.train.distill_teacher, device) if cfg.train.distill_teacher else None
    data = build_data(cfg, device, norm=(teacher.preprocess["mean"], teacher.preprocess["std"]) if teacher else None)
    if teacher is not None and (teacher.classes != data.classes or teacher.preprocess["img_size"] != data.img_size):
        raise UsageError(f"the teacher was trained on {teacher.classes} at {teacher.preprocess['img_size']}px; "
                         f"this data has {data.classes} at {data.img_size}px")
    check_for_size(cfg, data.img_size)
    _describe_data(data, reporter, cfg)
    float_model, model_args = build_run_model(cfg, data, reporter.info, fresh=not resume)
    model = qat.prepare(float_model, cfg.model.name, model_args) if cfg.train.qat else float_model

    with run.locked():  # from here on the run exists, and is this process's alone
        if not resume:
            _refuse_existing(run)  # another process may have run here since we looked
        reporter.attach_log(run.log)
        for stale in run.remove_stale_temp_files():
            reporter.log_only(f"removed {stale.name}, left by a write that was killed")
        atomic_write_text(run.config, dump_yaml(cfg))
        parts = make_parts(cfg, model, len(data.train), device, precision, teacher.model if teacher else None,
                           _loss_weights(cfg, data, reporter))
        state = _restore(run, parts, reporter, cfg) if resume else RunState()
        job = Job(cfg, run, data, parts, reporter)
        if cfg.train.profile:
            profile_steps(cfg, parts, data, run, reporter)
        with tracked(job, resume) as on_row:
            def hook(epoch: int, val: dict) -> None:
                on_row(epoch, state.history[-1])
                if on_epoch is not None:
                    on_epoch(epoch, val)

            result = fit(job, state, hook, stop_after)
            if result.complete:
                finish_run(job, result, model_args, float_model)
                on_row(None, None)
    return run.path


@contextmanager
def tracked(job: Job, resumed: bool):
    """Start the run's trackers; yield `on_row(epoch, row)` to feed them each epoch (`on_row(None, None)`: the run
    finished); close them, marked failed when the block raised. A tracker that fails while the run goes on (a
    tracking server gone away) is reported once and dropped: it never stops training."""
    trackers = make_trackers(job.cfg)
    live: list = []

    def on_row(epoch: int | None, row: dict | None) -> None:
        for t in list(live):
            try:
                if epoch is None:
                    t.finish(job)
                else:
                    t.epoch(epoch, row)
            except Exception as e:  # tracking is a copy of the run folder: losing it must not lose the run
                job.reporter.warn(f"tracker {type(t).__name__} failed ({type(e).__name__}: {e}); "
                                  "training goes on without it")
                live.remove(t)

    ok = False
    try:
        for t in trackers:
            t.start(job, resumed)
            live.append(t)  # closed below even if a later tracker fails to start
        yield on_row
        ok = True
    finally:
        for t in live:
            t.close(ok)


def _describe_data(data, reporter: Reporter, cfg: Config) -> None:
    sizes = data.sizes()
    reporter.info(f"data {data.source}: {len(data.classes)} classes, train {sizes['train']}, val {sizes['val']}, "
                  f"test {sizes['test']}, {data.img_size}px x{data.channels}")
    if data.val_is_test:
        reporter.warn("data.val_split=0: no validation split; per-epoch figures are on the test split and the "
                      "last epoch is kept (no selection on test)")
    counts = torch.bincount(data.train.labels, minlength=len(data.classes))
    if counts.min() > 0 and counts.max() >= 10 * counts.min():
        plain = (cfg.data.sampler, cfg.train.class_weights, cfg.train.loss) == ("random", "none", "ce")
        hint = "; data.sampler=balanced or train.class_weights=auto may help" if plain else ""
        reporter.info(f"classes are imbalanced ({counts.max() / counts.min():.0f}:1 in train){hint}")
    if data.skipped:
        reporter.warn(f"skipped {len(data.skipped)} unreadable or non-image file(s); see train.log")
        for name, reason in data.skipped:
            reporter.log_only(f"skipped {name}: {reason}")


def _loss_weights(cfg: Config, data, reporter: Reporter) -> torch.Tensor | None:
    """train.class_weights from the training split's class counts; said in the log when used."""
    counts = torch.bincount(data.train.labels, minlength=len(data.classes)).tolist()
    weights = class_weights(cfg.train.class_weights, counts, data.classes)
    if weights is not None:
        pairs = ", ".join(f"{c} {w:.2f}" for c, w in zip(data.classes, weights.tolist()))
        reporter.log_only(f"class weights ({cfg.train.class_weights}): {pairs}")
    return weights


def _restore(run: RunDir, parts, reporter: Reporter, cfg: Config) -> RunState:
    ckpt = load_checkpoint(run.last)
    parts.load_state_dict(ckpt)
    set_rng_state(ckpt["rng"])
    state = RunState(**ckpt["state"])
    reporter.info(f"resumed after epoch {state.epoch} of {cfg.train.epochs}")
    return state
