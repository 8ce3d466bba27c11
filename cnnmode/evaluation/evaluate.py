"""`cnnmode eval`: metrics, predictions.csv, classification report and plots for a model on a data split.

Training calls `evaluate_model` at its end, so every run folder has `eval/`.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from cnnmode.artifact import load_artifact
from cnnmode.data.trained_model_data import data_for_model
from cnnmode.engine.device import Precision, pick_device, pick_precision
from cnnmode.engine.loop import predict_logits
from cnnmode.errors import UsageError
from cnnmode.evaluation import eval_figures as figures
from cnnmode.evaluation.multilabel import write_multilabel_evaluation
from cnnmode.evaluation.rejection import judge_split, unknown_images
from cnnmode.evaluation.metrics import classification_report, compute_metrics, expected_calibration_error
from cnnmode.evaluation.report import write_report
from cnnmode.files import atomic_write_text
from cnnmode.rundir import resolve_target
from cnnmode.unknowns import Rejector, load_rejector, reject_threshold

PLOTS = ("confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_accuracy_all.png",
         "per_class_accuracy_top_bottom.png", "top_confused_pairs.png", "reliability_diagram.png",
         "misclassified.png", "predictions.png")


def predictions_table(labels: np.ndarray, probs: np.ndarray, classes: list[str], names: list[str] | None) -> str:
    """CSV text: one row per image with true/predicted labels, confidence, true-class probability and top-5."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["index", "path", "true", "predicted", "confidence", "true_prob", "top5_labels", "top5_probs"])
    k = min(5, len(classes))
    top = np.argsort(-probs, axis=1)[:, :k]
    for i, (y, p, t) in enumerate(zip(labels, probs, top)):
        writer.writerow([i, names[i] if names else "", classes[y], classes[t[0]], f"{p[t[0]]:.6f}", f"{p[y]:.6f}",
                         "|".join(classes[j] for j in t), "|".join(f"{p[j]:.6f}" for j in t)])
    return buf.getvalue()


def evaluate_model(model: nn.Module, loader, classes: list[str], mean: list[float], std: list[float], out_dir: Path,
                   precision: Precision, device: torch.device, tta: bool = False, seed: int = 0,
                   shift: int = 0, temperature: float = 1.0, thresholds: list[float] | None = None,
                   rejector: Rejector | None = None, reject_at: float | None = None,
                   unknown: torch.Tensor | None = None) -> dict:
    """Run `model` over `loader` and write metrics.json, predictions.csv, classification_report.txt and plots;
    probabilities are softmax(logits / temperature), or for label sets sigmoid, with per-label `thresholds`. With
    a fitted `rejector`, also accuracy against coverage (`rejection`), rejecting above `reject_at` (default: the
    fitted coverage), and how it tells `unknown` images (other classes, preprocessed) apart."""
    logits, labels = predict_logits(model, loader, precision, device, tta, shift)
    if labels.ndim == 2:
        return write_multilabel_evaluation(logits, labels, loader, classes, mean, std, out_dir, seed, temperature,
                                           thresholds)
    extra = {"rejection": judge_split(model, loader, rejector, temperature, precision, device, Path(out_dir),
                                      reject_at, unknown)} if rejector is not None else {}
    return write_evaluation(logits, labels, loader, classes, mean, std, out_dir, seed, temperature, extra)


def write_evaluation(logits: torch.Tensor, labels_t: torch.Tensor, loader, classes: list[str], mean: list[float],
                     std: list[float], out_dir: Path, seed: int = 0, temperature: float = 1.0,
                     extra: dict | None = None) -> dict:
    """metrics.json, predictions.csv, classification_report.txt and plots from any classifier's scores.

    `loader` is the (unshuffled) split the scores came from; its images illustrate the mistakes. With a fitted
    `temperature`, the metrics also give the calibration error without it (`ece_uncalibrated`).
    """
    out_dir = Path(out_dir)
    probs, labels = (logits.float() / temperature).softmax(1).numpy().astype(np.float64), labels_t.numpy()
    metrics = compute_metrics(labels, probs, classes)
    metrics["temperature"] = temperature
    raw = logits.float().softmax(1).numpy()
    metrics["ece_uncalibrated"] = expected_calibration_error(raw.max(1), raw.argmax(1) == labels)[0]
    metrics |= extra or {}
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(out_dir / "predictions.csv", predictions_table(labels, probs, classes,
                                                                     getattr(loader, "names", None)))
    atomic_write_text(out_dir / "classification_report.txt",
                      classification_report(labels, probs.argmax(1), classes))
    _plots(metrics, labels, probs, classes, loader, mean, std, out_dir, seed)
    return metrics


def _plots(metrics: dict, labels, probs, classes, loader, mean, std, out_dir: Path, seed: int) -> None:
    cm = np.asarray(metrics["confusion_matrix"])
    figures.confusion_matrix(cm, classes, out_dir / "confusion_matrix.png")
    figures.confusion_matrix(cm, classes, out_dir / "confusion_matrix_normalized.png", normalized=True)
    figures.per_class_accuracy_all(metrics["per_class"], metrics["accuracy"], out_dir / "per_class_accuracy_all.png")
    figures.per_class_accuracy_top_bottom(metrics["per_class"], out_dir / "per_class_accuracy_top_bottom.png")
    figures.top_confused_pairs(metrics["top_confused"], out_dir / "top_confused_pairs.png")
    figures.reliability_diagram(metrics["calibration_bins"], metrics["ece"], out_dir / "reliability_diagram.png")
    preds, conf = probs.argmax(1), probs.max(1)
    wrong = np.nonzero(preds != labels)[0]
    worst = wrong[np.argsort(-conf[wrong])][:18].tolist()
    _grid(loader, worst, labels, preds, conf, classes, mean, std, out_dir / "misclassified.png",
          f"Most confident mistakes ({len(wrong)} of {len(labels)} wrong)")
    rng = np.random.default_rng(seed)
    shown = sorted(rng.choice(len(labels), size=min(18, len(labels)), replace=False).tolist())
    _grid(loader, shown, labels, preds, conf, classes, mean, std, out_dir / "predictions.png",
          "Random images: predicted (confidence) / true")


def _grid(loader, idx, labels, preds, conf, classes, mean, std, path: Path, title: str) -> None:
    titles = [f"P: {classes[preds[i]]} ({100 * conf[i]:.0f}%)\nT: {classes[labels[i]]}" for i in idx]
    colors = ["green" if preds[i] == labels[i] else "red" for i in idx]
    figures.loader_grid(loader, idx, mean, std, titles, colors, path, title)


def run_eval(target: str, data: str | None = None, split: str = "test", out: str | None = None,
             device: str = "auto", say: Callable[[str], None] = lambda line: None, unknown: str | None = None,
             coverage: float | None = None) -> tuple[Path, dict]:
    """Evaluate a run folder or an artifact file on a data split; returns (output folder, metrics). `say` hears
    the first line: which model, on which device. A model with a fitted unknown-image score is also judged on
    accuracy against coverage (rejecting at `coverage`, default the fitted one) and, given `unknown` (images of
    other classes), on how well it rejects them."""
    if split not in ("test", "val"):
        raise UsageError(f"--split must be test or val, not {split!r}")
    where = resolve_target(target)
    dev = pick_device(device)
    say(f"evaluating {where.file} on {dev}")
    art = load_artifact(where, dev)
    rejector = None if art.multilabel else load_rejector(where.file)
    if (unknown or coverage is not None) and rejector is None:
        raise UsageError("--unknown and --coverage judge the model's fitted unknown-image score, and this model has "
                         "none" + (" (a multi-label model)" if art.multilabel else
                                   f"; fit it with `cnnmode calibrate {target}`"))
    reject_at = reject_threshold("auto", coverage, rejector) if rejector else None
    others = unknown_images(unknown, art.preprocess, art.classes) if unknown else None
    cfg, bundle = data_for_model(where, art.preprocess, art.classes, data, "evaluating", dev)
    out_dir = Path(out) if out else where.home / "eval"
    metrics = evaluate_model(art.model, getattr(bundle, split), art.classes, art.preprocess["mean"],
                             art.preprocess["std"], out_dir, pick_precision(cfg.train.amp, dev), dev,
                             cfg.train.tta, cfg.train.seed, cfg.train.tta_translate,
                             art.temperature, art.preprocess.get("thresholds"), rejector, reject_at, others)
    if where.run is not None and out is None:
        write_report(where.run.path)
    return out_dir, metrics
