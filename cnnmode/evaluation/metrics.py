"""Classification metrics from predictions, computed with scikit-learn (fractions in [0, 1])."""
from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE over equal-width confidence bins, and the per-bin table used by the reliability diagram."""
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        acc = float(correct[inside].mean()) if n else 0.0
        conf = float(confidence[inside].mean()) if n else 0.0
        ece += abs(acc - conf) * n / max(len(confidence), 1)
        table.append({"low": float(lo), "high": float(hi), "count": n, "accuracy": acc, "confidence": conf})
    return ece, table


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 that minimises the negative log-likelihood of
    softmax(logits / T) on held-out images. Dividing by T never changes the predicted class. For label sets
    (multi-hot `labels`) the likelihood is that of sigmoid(logits / T) per label."""
    multilabel = labels.ndim == 2
    logits = logits.detach().float().cpu()
    labels = labels.detach().cpu().float() if multilabel else labels.detach().long().cpu()
    nll = torch.nn.functional.binary_cross_entropy_with_logits if multilabel else torch.nn.functional.cross_entropy
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    return round(t, 4) if np.isfinite(t) and 0.01 < t < 100 else 1.0


def top_confused(cm: np.ndarray, classes: list[str], k: int = 10) -> list[dict]:
    """The k largest off-diagonal confusion counts: true → predicted, count, share of the true class."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    pairs = []
    for flat in order:
        t, p = np.unravel_index(flat, off.shape)
        if off[t, p] == 0:
            break
        pairs.append({"true": classes[t], "predicted": classes[p], "count": int(off[t, p]),
                      "share": float(off[t, p] / max(cm[t].sum(), 1))})
    return pairs


def compute_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present), top-5, loss, macro/weighted P/R/F1, per-class table, confusion matrix, confused pairs, ECE."""
    ids = list(range(len(classes)))
    preds = probs.argmax(1)
    cm = skm.confusion_matrix(labels, preds, labels=ids)
    p, r, f, support = skm.precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    ece, bins = expected_calibration_error(probs.max(1), preds == labels)
    clipped = np.clip(probs, 1e-12, 1)
    k = min(5, len(classes))
    out = {
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "balanced_accuracy": float(np.mean([cm[i, i] / cm[i].sum() for i in ids if cm[i].sum()])),
        "top5": float(skm.top_k_accuracy_score(labels, probs, k=k, labels=ids)) if k < len(classes) else 1.0,
        "loss": float(skm.log_loss(labels, clipped / clipped.sum(1, keepdims=True), labels=ids)),
        "ece": float(ece), "count": int(len(labels)),
    }
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(labels, preds, labels=ids, average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(ap), f"recall_{avg}": float(ar), f"f1_{avg}": float(af)}
    out["per_class"] = {c: {"accuracy": float(cm[i, i] / max(cm[i].sum(), 1)), "precision": float(p[i]),
                            "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
                        for i, c in enumerate(classes)}
    out["confusion_matrix"] = cm.tolist()
    out["top_confused"] = top_confused(cm, classes)
    out["calibration_bins"] = bins
    return out


def classification_report(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> str:
    """scikit-learn's familiar per-class text table."""
    return skm.classification_report(labels, preds, labels=list(range(len(classes))), target_names=classes,
                                     digits=4, zero_division=0)
