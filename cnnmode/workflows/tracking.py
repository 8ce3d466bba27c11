"""Experiment trackers (`run.trackers`): plug-ins fed the same things at the same moments, so a team's tracking
server or TensorBoard sees what the run folder holds.

    start(job, resumed)   the resolved config (flattened) as params, tags (git commit, recipe, device)
    epoch(epoch, row)     the history.csv row of every epoch
    finish(job)           final metrics, figures, report, model card and model.pt
    close(ok)             the run ends (failed when training raised)

Weights & Biases writes to `<run folder>/wandb/` offline unless an API key is set (`wandb sync` uploads it later).
MLflow logs to `sqlite:///<run.dir>/mlflow.db` (artifacts beside it in `mlartifacts/`) unless
MLFLOW_TRACKING_URI names a server; runs started while another is active (ablate, search, cv) are nested under it.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from cnnmode.config import Config, flatten
from cnnmode.errors import UsageError
from cnnmode.registry import Registry
from cnnmode.workflows.results import git_commit

TRACKERS: Registry = Registry("tracker")
FIGURES = ("plots/training_curves.png", "plots/predictions.png", "eval/confusion_matrix_normalized.png",
           "eval/reliability_diagram.png", "eval/per_class_accuracy_all.png")
FINAL_KEYS = ("accuracy", "balanced_accuracy", "top5", "f1_macro", "loss", "ece", "map", "map_micro",
              "hamming_loss", "f1_samples")  # the last four: label sets
MLFLOW_ID = ".mlflow_run_id"
WANDB_ID = ".wandb_run_id"
_SET_BY_US: set[str] = set()  # default store URIs this process pointed MLflow at  # in the run folder, so that a resumed run continues its MLflow run


def _params(cfg: Config) -> dict[str, str]:
    return {k: ",".join(v) if isinstance(v, list) else str(v) for k, v in flatten(cfg.to_dict()).items()}


def _final(job) -> dict[str, float]:
    test = json.loads(job.run.metrics.read_text())["test"]
    return {f"test_{k}": float(test[k]) for k in FINAL_KEYS if isinstance(test.get(k), (int, float))}


@TRACKERS.register("tensorboard", "TensorBoard events: scalars, figures, the model graph, hyperparameters")
class TensorBoardTracker:
    def start(self, job, resumed: bool) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("the tensorboard tracker needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(job.run.tensorboard))
        self.writer.add_text("config", "```\n" + json.dumps(_params(job.cfg), indent=1) + "\n```")
        if not resumed:
            self._graph(job)

    def _graph(self, job) -> None:
        model = job.parts.eval_model
        x, _ = next(iter(job.data.val))
        try:
            self.writer.add_graph(getattr(model, "_orig_mod", model).float().eval(), x[:1].float())
        except Exception as e:  # a model that does not trace still trains; say why its graph is missing
            self.writer.add_text("graph", f"no graph: {type(e).__name__}: {e}")
        finally:
            model.train()

    def epoch(self, epoch: int, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, job) -> None:
        for name in FIGURES:
            path = job.run.path / name
            if path.exists():
                with Image.open(path) as img:
                    self.writer.add_image(Path(name).stem, np.asarray(img.convert("RGB")), dataformats="HWC")
        hparams = {k: v for k, v in flatten(job.cfg.to_dict()).items()
                   if isinstance(v, (int, float, str, bool)) and not k.startswith("run.")}
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in _final(job).items()}, run_name=".")

    def close(self, ok: bool) -> None:
        self.writer.close()


@TRACKERS.register("mlflow", "MLflow: params, metrics per epoch, artifacts; nested under an active parent run")
class MlflowTracker:
    def start(self, job, resumed: bool) -> None:
        self.mlflow = use_mlflow(Path(job.cfg.run.dir))
        id_file = job.run.path / MLFLOW_ID
        run_id = id_file.read_text().strip() if resumed and id_file.exists() else None
        nested = self.mlflow.active_run() is not None
        run = self.mlflow.start_run(run_id=run_id, run_name=None if run_id else job.run.path.name, nested=nested)
        id_file.write_text(run.info.run_id)
        if not run_id:
            params = _params(job.cfg)
            self.mlflow.log_params({k: v[:6000] for k, v in params.items()})
        env = job.parts.step
        self.mlflow.set_tags({"recipe": job.cfg.recipe or "", "model": job.cfg.model.name,
                              "device": str(env.device), "precision": env.precision.name,
                              "run_dir": str(job.run.path), "git_commit": git_commit()})

    def epoch(self, epoch: int, row: dict) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=epoch)

    def finish(self, job) -> None:
        self.mlflow.log_metrics(_final(job))
        for folder in ("plots", "eval"):
            if (job.run.path / folder).is_dir():
                self.mlflow.log_artifacts(str(job.run.path / folder), folder)
        for path in (job.run.report, job.run.model_card, job.run.metrics, job.run.config, job.run.model):
            if path.exists():
                self.mlflow.log_artifact(str(path))

    def close(self, ok: bool) -> None:
        self.mlflow.end_run(status="FINISHED" if ok else "FAILED")


@TRACKERS.register("wandb", "Weights & Biases: config, metrics per epoch, figures, the model as an artifact; "
                           "offline (in the run folder) unless an API key is set")
class WandbTracker:
    def start(self, job, resumed: bool) -> None:
        import wandb

        id_file = job.run.path / WANDB_ID
        run_id = id_file.read_text().strip() if resumed and id_file.exists() else None
        env = job.parts.step
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "cnnmode"), name=job.run.path.name,
                              id=run_id, resume="allow" if run_id else None, dir=str(job.run.path),
                              mode=wandb_mode(), config=flatten(job.cfg.to_dict()),
                              tags=[t for t in (job.cfg.recipe, job.cfg.model.name, env.device.type) if t],
                              notes=f"git commit {git_commit()}; precision {env.precision.name}")
        id_file.write_text(self.run.id)
        self.step = 0

    def epoch(self, epoch: int, row: dict) -> None:
        self.step = epoch
        self.run.log({k: v for k, v in row.items() if k != "epoch"} | {"epoch": epoch}, step=epoch)

    def finish(self, job) -> None:
        self.run.summary.update(_final(job))
        images = {Path(name).stem: self.wandb.Image(str(job.run.path / name)) for name in FIGURES
                  if (job.run.path / name).exists()}
        if images:
            self.run.log(images, step=self.step)
        artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model", metadata=_final(job))
        for path in (job.run.model, job.run.model_card, job.run.metrics, job.run.config, job.run.report):
            if path.exists():
                artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def wandb_mode() -> str:
    """WANDB_MODE when set; else online with an API key (WANDB_API_KEY, or `wandb login`'s netrc entry), else
    offline, so a run never waits on a login prompt or a network it does not have."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def use_mlflow(runs_dir: Path):
    """The mlflow module pointed at the store: MLFLOW_TRACKING_URI, else sqlite:///<runs_dir>/mlflow.db with
    artifacts in <runs_dir>/mlartifacts; the experiment is MLFLOW_EXPERIMENT_NAME or `cnnmode`."""
    try:
        import mlflow
    except ImportError:
        raise UsageError("the mlflow tracker needs MLflow: pip install mlflow-skinny (or mlflow)") from None
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "cnnmode")
    given = os.environ.get("MLFLOW_TRACKING_URI")
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        os.environ.setdefault(key, value)  # MLflow's defaults retry a dead server for minutes
    if given and given not in _SET_BY_US:  # MLflow exports the URI it was last given: ours are not the user's
        mlflow.set_tracking_uri(given)
        mlflow.set_experiment(name)
        return mlflow
    root = Path(runs_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _SET_BY_US.add(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri())
    mlflow.set_experiment(name)
    return mlflow


def make_trackers(cfg: Config) -> list:
    """The trackers `cfg` asks for (run.tensorboard counts as tensorboard), each checked importable up front."""
    names = list(cfg.run.trackers) + (["tensorboard"] if cfg.run.tensorboard and "tensorboard" not in
                                      cfg.run.trackers else [])
    for name in names:
        _require(name)
    return [TRACKERS.get(name)() for name in names]


def _require(name: str) -> None:
    """A one-line error naming the package a tracker needs, before the run folder is made."""
    import importlib.util

    package, install = {"mlflow": ("mlflow", "mlflow-skinny (or mlflow)"), "wandb": ("wandb", "wandb"),
                        "tensorboard": ("tensorboard", "tensorboard")}[name]
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"run.trackers={name} needs the {package} package: pip install {install}")


@contextmanager
def parent_run(cfg: Config, name: str) -> Iterator[None]:
    """Nest the runs made inside the block (all with cfg's run.dir) under one MLflow run called `name`, when cfg
    tracks to MLflow; an interrupted block marks the parent failed."""
    if "mlflow" not in cfg.run.trackers:
        yield
        return
    mlflow = use_mlflow(Path(cfg.run.dir))
    with mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None):
        yield


@contextmanager
def tracked(job, resumed: bool) -> Iterator:
    """Start the run's trackers; yield `on_row(epoch, row)` to feed them each epoch (`on_row(None, None)`: the run
    finished); close them, marked failed when the block raised. A tracker that fails while the run goes on (a
    tracking server gone away, or one that never answered) is reported once and dropped: it never stops training.
    MLflow's requests are bounded by its own timeout and retries (10 s, one retry, unless set in the environment)."""
    trackers = make_trackers(job.cfg) if job.world.is_main else []  # under torchrun: rank 0's records only
    live: list = []

    def drop(t, e: BaseException) -> None:
        job.reporter.warn(f"tracker {type(t).__name__} failed ({type(e).__name__}: {str(e)[:200]}); "
                          "training goes on without it")
        if t in live:
            live.remove(t)

    def on_row(epoch: int | None, row: dict | None) -> None:
        for t in list(live):
            try:
                t.finish(job) if epoch is None else t.epoch(epoch, row)
            except Exception as e:  # tracking is a copy of the run folder: losing it must not lose the run
                drop(t, e)

    ok = False
    try:
        for t in trackers:
            live.append(t)
            try:
                t.start(job, resumed)
            except Exception as e:  # an unreachable server: the run goes on, recorded in its own folder
                drop(t, e)
        yield on_row
        ok = True
    finally:
        for t in list(live):
            try:
                t.close(ok)
            except Exception as e:
                drop(t, e)
