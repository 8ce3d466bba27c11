"""Multi-label evaluation: per-label thresholds fitted on held-out images, the metrics of label sets (per-label
precision/recall/F1/AP, macro and micro mAP, subset accuracy, Hamming loss, example-based F1, per-label
calibration; all scikit-learn), and their pictures (per-label AP bars, precision-recall curves, co-occurrence of
errors, reliability, an image grid)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm

from cnnmode.evaluation import eval_figures as figures
from cnnmode.evaluation.metrics import expected_calibration_error
from cnnmode.figures import plt, save_fig
from cnnmode.files import atomic_write_text

PLOTS = ("per_label_ap.png", "pr_curves.png", "error_cooccurrence.png", "reliability_diagram.png",
         "predictions.png")


def fit_thresholds(probs: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per label, the probability threshold with the best F1 on held-out images, midway between the scores it
    separates (0.5 for a label with no present case there)."""
    out = []
    for j in range(labels.shape[1]):
        if not labels[:, j].any():
            out.append(0.5)
            continue
        precision, recall, cut = skm.precision_recall_curve(labels[:, j], probs[:, j])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1[:-1]))
        below = cut[best - 1] if best > 0 else 0.0  # any cut in (below, cut[best]] makes the same choices:
        out.append(round(float(np.clip((below + cut[best]) / 2, 0.01, 0.99)), 4))  # take the middle
    return out


def label_sets(probs: np.ndarray, thresholds: list[float] | np.ndarray) -> np.ndarray:
    """Multi-hot predictions: each label present when its probability reaches its threshold."""
    return (probs >= np.asarray(thresholds)[None, :]).astype(np.int64)


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str],
                       thresholds: list[float]) -> dict:
    """Every label-set figure (fractions in [0, 1]); `accuracy` is the subset accuracy and `map` the macro mAP
    over the labels with a present case."""
    preds = label_sets(probs, thresholds)
    present = labels.any(0)
    ap = np.array([skm.average_precision_score(labels[:, j], probs[:, j]) if present[j] else np.nan
                   for j in range(len(classes))])
    p, r, f, support = skm.precision_recall_fscore_support(labels, preds, zero_division=0)
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    bce = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).sum(1).mean()
    ece, bins = expected_calibration_error(probs.ravel(), labels.ravel().astype(bool))
    out = {"task": "multilabel", "map": float(np.nanmean(ap)) if present.any() else 0.0,
           "map_micro": float(skm.average_precision_score(labels, probs, average="micro")) if present.any() else 0.0,
           "accuracy": float(skm.accuracy_score(labels, preds)), "hamming_loss": float(skm.hamming_loss(labels, preds)),
           "f1_samples": float(skm.f1_score(labels, preds, average="samples", zero_division=1)),  # no label, none said: 1
           "loss": float(bce), "ece": float(ece), "count": int(len(labels)),
           "labels_per_image": float(labels.sum(1).mean()), "no_label_images": int((labels.sum(1) == 0).sum())}
    out["subset_accuracy"] = out["accuracy"]
    for avg in ("macro", "micro"):
        ap_, ar, af, _ = skm.precision_recall_fscore_support(labels, preds, average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(ap_), f"recall_{avg}": float(ar), f"f1_{avg}": float(af)}
    out["per_label"] = {c: {"ap": None if np.isnan(ap[j]) else float(ap[j]), "precision": float(p[j]),
                            "recall": float(r[j]), "f1": float(f[j]), "support": int(support[j]),
                            "threshold": float(thresholds[j]),
                            "ece": float(expected_calibration_error(probs[:, j], labels[:, j].astype(bool))[0])}
                        for j, c in enumerate(classes)}
    out["calibration_bins"] = bins
    return out


def predictions_table(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray, classes: list[str],
                      names: list[str] | None) -> str:
    """CSV text: one row per image with its true and predicted label sets (`;`-separated) and every label's
    probability."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["index", "path", "true", "predicted", "exact"] + [f"p_{c}" for c in classes])
    for i, (y, p, q) in enumerate(zip(labels, probs, preds)):
        writer.writerow([i, names[i] if names else "", ";".join(c for c, v in zip(classes, y) if v),
                         ";".join(c for c, v in zip(classes, q) if v), int((y == q).all())]
                        + [f"{v:.6f}" for v in p])
    return buf.getvalue()


def write_multilabel_evaluation(logits: torch.Tensor, labels_t: torch.Tensor, loader, classes: list[str],
                                mean: list[float], std: list[float], out_dir: Path, seed: int = 0,
                                temperature: float = 1.0, thresholds: list[float] | None = None) -> dict:
    """metrics.json, predictions.csv, classification_report.txt and the multi-label plots; probabilities are
    sigmoid(logits / temperature), each label present from its threshold (0.5 when none are given)."""
    out_dir = Path(out_dir)
    probs = torch.sigmoid(logits.float() / temperature).numpy().astype(np.float64)
    labels = labels_t.numpy().astype(np.int64)
    thresholds = list(thresholds) if thresholds else [0.5] * len(classes)
    metrics = multilabel_metrics(labels, probs, classes, thresholds)
    raw = torch.sigmoid(logits.float()).numpy()
    metrics["temperature"] = temperature
    metrics["ece_uncalibrated"] = float(expected_calibration_error(raw.ravel(), labels.ravel().astype(bool))[0])
    preds = label_sets(probs, thresholds)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(out_dir / "predictions.csv",
                      predictions_table(labels, probs, preds, classes, getattr(loader, "names", None)))
    atomic_write_text(out_dir / "classification_report.txt",
                      skm.classification_report(labels, preds, target_names=classes, digits=4, zero_division=0))
    per_label_ap(metrics["per_label"], metrics["map"], out_dir / "per_label_ap.png")
    pr_curves(labels, probs, classes, out_dir / "pr_curves.png")
    error_cooccurrence(labels, preds, classes, out_dir / "error_cooccurrence.png")
    figures.reliability_diagram(metrics["calibration_bins"], metrics["ece"], out_dir / "reliability_diagram.png")
    _grid(loader, labels, preds, probs, classes, mean, std, out_dir / "predictions.png", seed)
    return metrics


def per_label_ap(per_label: dict, mean_ap: float, path: Path) -> Path:
    """Every label's average precision, worst first, with the macro mAP as a line."""
    items = sorted(((c, v["ap"]) for c, v in per_label.items() if v["ap"] is not None), key=lambda t: t[1])
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(items) + 1.5)))
    names, values = [c for c, _ in items], [v for _, v in items]
    ax.barh(range(len(names)), [100 * v for v in values], color=plt.cm.RdYlGn(np.asarray(values)))
    ax.set(yticks=range(len(names)), xlim=(0, 100), xlabel="average precision %",
           title="Average precision per label")
    ax.set_yticklabels(names)
    ax.axvline(100 * mean_ap, color="gray", ls="--", label=f"mAP {100 * mean_ap:.1f}%")
    ax.legend(loc="lower right")
    return save_fig(fig, path)


def pr_curves(labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path, most: int = 12) -> Path:
    """Precision-recall curves of the labels (the `most` most frequent when there are more)."""
    order = np.argsort(-labels.sum(0))[:most]
    fig, ax = plt.subplots(figsize=(7, 6))
    for j in order:
        if labels[:, j].any():
            precision, recall, _ = skm.precision_recall_curve(labels[:, j], probs[:, j])
            ax.plot(recall, precision, lw=1.5, label=classes[j])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall per label")
    ax.legend(fontsize=8, loc="lower left")
    return save_fig(fig, path)


def error_cooccurrence(labels: np.ndarray, preds: np.ndarray, classes: list[str], path: Path) -> Path:
    """How often label i is missed (row) in images where label j is wrongly added (column): which labels the
    model confuses with which; the diagonal counts each label's misses."""
    missed, added = (labels == 1) & (preds == 0), (labels == 0) & (preds == 1)
    table = missed.T.astype(np.int64) @ added.astype(np.int64)
    np.fill_diagonal(table, missed.sum(0))
    return figures.confusion_matrix(table, classes, path, title="Errors together: label missed (row) while label "
                                    "added (column); diagonal: misses", xlabel="added", ylabel="missed")


def _grid(loader, labels, preds, probs, classes, mean, std, path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shown = sorted(rng.choice(len(labels), size=min(12, len(labels)), replace=False).tolist())
    names = lambda row: ", ".join(c for c, v in zip(classes, row) if v) or "(none)"  # noqa: E731
    titles = [f"P: {names(preds[i])}\nT: {names(labels[i])}" for i in shown]
    colors = ["green" if (preds[i] == labels[i]).all() else "red" for i in shown]
    figures.loader_grid(loader, shown, mean, std, titles, colors, path, "Random images: predicted / true label sets")
