"""What a finished training run leaves behind: the best weights scored on the test split (`eval/`),
metrics.json, the model.pt artifact, the plots, report.html, MODEL_CARD.md and the console summary."""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import torch
import torch.nn as nn

from cnnmode.artifact import save_artifact
from cnnmode.data.labels import counts as label_counts
from cnnmode.data.source_layout import source_checksum
from cnnmode.engine import qat
from cnnmode.engine.fit import FitResult, Job
from cnnmode.engine.loop import headline, predict_logits
from cnnmode.evaluation.card import write_model_card
from cnnmode.evaluation.eval_figures import gather_images
from cnnmode.evaluation.evaluate import evaluate_model
from cnnmode.evaluation.metrics import fit_temperature
from cnnmode.evaluation.multilabel import fit_thresholds
from cnnmode.evaluation.rejection import fit_rejector, save_heldout
from cnnmode.evaluation.training_figures import predictions_figure, training_curves
from cnnmode.evaluation.report import write_report
from cnnmode.files import atomic_write_text, torch_load
from cnnmode.unknowns import save_rejector


SINGLE_KEYS = ("accuracy", "balanced_accuracy", "top5", "loss", "f1_macro", "ece", "ece_uncalibrated", "temperature")
MULTILABEL_KEYS = ("map", "map_micro", "accuracy", "subset_accuracy", "hamming_loss", "f1_samples", "f1_macro",
                   "f1_micro", "loss", "ece", "ece_uncalibrated", "temperature")


def git_commit() -> str:
    """The commit of this CNN Mode checkout, or '' outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(device: torch.device, precision_name: str) -> dict:
    """Package versions, git commit, device and threads: what a result needs beside it to be reproduced."""
    import torchvision

    from cnnmode import __version__

    commit = git_commit()
    return {"cnnmode": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "git_commit": commit, "device": str(device),
            "precision": precision_name, "threads": torch.get_num_threads(), "platform": platform.platform()}


def _data_record(data) -> dict:
    """What the run was trained on: the source, its checksum, images per class per split, the preprocessing."""
    splits = {"train": data.train, "test": data.test} if data.val_is_test else \
        {"train": data.train, "val": data.val, "test": data.test}
    counts = {name: dict(zip(data.classes, label_counts(loader.labels, len(data.classes)).tolist()))
              for name, loader in splits.items()}
    return {"source": data.source, "checksum": source_checksum(data.source), "counts": counts,
            "img_size": data.img_size, "channels": data.channels, "mean": data.mean, "std": data.std}


def finish_run(job: Job, result: FitResult, model_args: dict, float_model: nn.Module) -> None:
    """Best weights → test evaluation (eval/), metrics.json, artifact, plots, report, summary table."""
    cfg, run, data, state = job.cfg, job.run, job.data, result.state
    setup, eval_model = job.parts.step, job.parts.eval_model
    getattr(eval_model, "_orig_mod", eval_model).load_state_dict(torch_load(run.best)["model"])
    held_logits, held_labels = predict_logits(eval_model, data.calib or data.val, setup.precision, setup.device,
                                              cfg.train.tta, cfg.train.tta_translate)
    temperature = fit_temperature(held_logits, held_labels)
    if not data.multilabel:
        save_heldout(run.heldout, data.calib or data.val, held_logits, held_labels, temperature,
                     len(data.train.labels) + (0 if data.val_is_test else len(data.val.labels)))
    thresholds = fit_thresholds(torch.sigmoid(held_logits / temperature).numpy(), held_labels.numpy()) \
        if data.multilabel else None
    rejector = fit_rejector(eval_model, data.reference, data.calib or data.val, temperature, setup.precision,
                            setup.device, multilabel=data.multilabel)
    ev = evaluate_model(eval_model, data.test, data.classes, data.mean, data.std, run.eval, setup.precision,
                        setup.device, cfg.train.tta, cfg.train.seed, cfg.train.tta_translate, temperature, thresholds,
                        rejector)
    test = {k: ev[k] for k in (MULTILABEL_KEYS if data.multilabel else SINGLE_KEYS)}
    infer_start = time.perf_counter()  # one plain pass over the test split (no TTA): what a deployed model does
    predict_logits(eval_model, data.test, setup.precision, setup.device)
    inference_rate = len(data.test.labels) / max(time.perf_counter() - infer_start, 1e-9)
    if data.val_is_test:  # the final model (with shift TTA) may be the first to reach the target
        state.note_target(cfg.train.target_accuracy, headline(test))
    params = sum(p.numel() for p in eval_model.parameters())
    train_imgs = len(data.train) * cfg.train.batch_size * len(state.history)
    best = {"map" if data.multilabel else "accuracy": state.best_acc}
    metrics = {"test": test, "val": None if data.val_is_test else best, "task": _task(data),
               "best_epoch": state.best_epoch, "epochs_run": state.epoch, "stopped_early": result.stopped_early,
               "train_time_s": round(state.train_time_s, 2), "time_to_target_s": state.time_to_target_s,
               "target_accuracy": cfg.train.target_accuracy or None,
               "images_per_s": round(train_imgs / max(state.train_time_s, 1e-9), 1),
               "inference_images_per_s": round(inference_rate, 1), "params": params,
               "classes": data.classes, "data": _data_record(data), "skipped_files": len(data.skipped),
               "seed": cfg.train.seed,
               "environment": environment(setup.device, setup.precision.name)}
    artifact_model = getattr(eval_model, "_orig_mod", eval_model)
    if cfg.train.qat:
        metrics["qat"] = qat.finish_qat(eval_model, float_model, data.test, run.export / "model-int8-qat.ts")
        artifact_model = float_model
    preprocess = {"img_size": data.img_size, "mean": data.mean, "std": data.std, "channels": data.channels,
                  "temperature": temperature, "task": _task(data)}
    if thresholds is not None:
        preprocess["thresholds"] = thresholds
    save_artifact(run.model, artifact_model, cfg.model.name, model_args, data.classes, preprocess,
                  {"test": test, "recipe": cfg.recipe, "best_epoch": state.best_epoch})
    if rejector is not None:
        save_rejector(rejector, run.model)
        metrics["unknowns"] = {"score": rejector.score, "index_images": len(rejector.index),
                               "index_mb": round(rejector.index.numel() * 2 / 2**20, 2),
                               "coverage": rejector.coverage, "test": ev.get("rejection")}
    atomic_write_text(run.metrics, json.dumps(metrics, indent=2))
    _plots(job, state.history, eval_model, temperature)
    write_report(run.path)
    write_model_card(run.path)
    job.reporter.table(f"{cfg.recipe or cfg.model.name}: results", _summary_rows(job, metrics, state))


def _task(data) -> str:
    return "multilabel" if data.multilabel else "single"


def _plots(job: Job, history: list[dict], eval_model: nn.Module, temperature: float) -> None:
    data, setup = job.data, job.parts.step
    training_curves(history, job.run.plots / "training_curves.png")
    if data.multilabel:  # eval/predictions.png shows label sets
        return
    pick = torch.randperm(len(data.test.labels), generator=torch.Generator().manual_seed(job.cfg.train.seed))[:6]
    images = gather_images(data.test, pick.tolist())
    logits, _ = predict_logits(eval_model, [(images.to(setup.device), data.test.labels[pick])], setup.precision,
                               setup.device)
    predictions_figure(history, images, data.test.labels[pick], (logits / temperature).softmax(1), data.classes,
                       data.mean, data.std, job.run.plots / "predictions.png")


def _multilabel_rows(test: dict) -> list[tuple[str, str]]:
    return [("test mAP (macro)", f"{100 * test['map']:.2f}%"), ("test mAP (micro)", f"{100 * test['map_micro']:.2f}%"),
            ("test subset accuracy", f"{100 * test['subset_accuracy']:.2f}%"),
            ("test F1 (examples / macro)", f"{100 * test['f1_samples']:.2f}% / {100 * test['f1_macro']:.2f}%"),
            ("test Hamming loss", f"{test['hamming_loss']:.4f}"),
            ("calibration", f"ECE {100 * test['ece_uncalibrated']:.1f}% → {100 * test['ece']:.1f}% with "
                            f"temperature {test['temperature']:.2f}; per-label thresholds fitted on held-out images")]


def _summary_rows(job: Job, metrics: dict, state) -> list[tuple[str, str]]:
    cfg, test = job.cfg, metrics["test"]
    if job.data.multilabel:
        rows = _multilabel_rows(test) + [
            ("kept epoch", f"{state.best_epoch} (last; no validation split)") if job.data.val_is_test else
            ("best epoch", f"{state.best_epoch} (val mAP {100 * state.best_acc:.2f}%)"),
            ("train time", f"{state.train_time_s:.1f} s ({metrics['images_per_s']:.0f} img/s)"),
            ("parameters", f"{metrics['params'] / 1e6:.2f} M"), ("report", str(job.run.report))]
        return rows
    rows = [("test accuracy", f"{100 * test['accuracy']:.2f}%"), ("test top-5", f"{100 * test['top5']:.2f}%"),
            ("test balanced accuracy", f"{100 * test['balanced_accuracy']:.2f}%"),
            ("test F1 macro", f"{100 * test['f1_macro']:.2f}%"), ("test loss", f"{test['loss']:.4f}"),
            ("calibration", f"ECE {100 * test['ece_uncalibrated']:.1f}% → {100 * test['ece']:.1f}% with "
                            f"temperature {test['temperature']:.2f}"),
            ("kept epoch", f"{state.best_epoch} (last; no validation split)") if job.data.val_is_test else
            ("best epoch", f"{state.best_epoch} (val {100 * state.best_acc:.2f}%)"),
            ("train time", f"{state.train_time_s:.1f} s ({metrics['images_per_s']:.0f} img/s)"),
            ("parameters", f"{metrics['params'] / 1e6:.2f} M"), ("report", str(job.run.report))]
    if "qat" in metrics:
        rows.append(("int8 (QAT) accuracy", f"{100 * metrics['qat']['int8_accuracy']:.2f}%"))
    if cfg.train.target_accuracy:
        ttt = state.time_to_target_s
        rows.append((f"time to {100 * cfg.train.target_accuracy:.1f}% val",
                     f"{ttt:.1f} s" if ttt is not None else "not reached"))
    return rows
