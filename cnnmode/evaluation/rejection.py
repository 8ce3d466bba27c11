"""Fitting the unknown-image score after training (or in `cnnmode calibrate`), and judging it: accuracy against
coverage on a labelled split, and, given images of classes outside the training set, how well each score tells
them apart (scikit-learn's ROC AUC) and how many the chosen threshold rejects."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from cnnmode.engine.device import Precision
from cnnmode.errors import UsageError
from cnnmode.figures import plt, save_fig
from cnnmode.unknowns import INDEX_CAP, NEIGHBOURS, COVERAGE, SCORES, Rejector, knn_score, logits_and_features, \
    msp_score


@torch.no_grad()
def run_with_features(model: nn.Module, loader, precision: Precision, device: torch.device,
                      limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, embeddings, labels) over a loader (no test-time augmentation: as `predict` sees images), on the
    CPU in fp32; stops after `limit` images."""
    model = getattr(model, "_orig_mod", model).eval()  # a hook on a compiled model would recompile it
    logits, feats, labels, seen = [], [], [], 0
    for x, y in loader:
        with precision.autocast(device):
            out, emb = logits_and_features(model, x)
        logits.append(out.cpu())
        feats.append(emb.cpu())
        labels.append(y.cpu())
        seen += len(x)
        if limit is not None and seen >= limit:
            break
    return torch.cat(logits)[:limit], torch.cat(feats)[:limit], torch.cat(labels)[:limit]


def save_heldout(path: Path, loader, logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                 pool: int) -> Path:
    """The held-out images' names, given labels and calibrated probabilities, and `pool` (the images that train
    and validation split between them): what `data labels` ranks label errors from."""
    from cnnmode.files import atomic_write

    names = np.array([str(n) for n in (getattr(loader, "names", None) or [""] * len(labels))])
    probs = (logits.float() / temperature).softmax(1).numpy().astype(np.float32)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, names=names, labels=labels.numpy(), probs=probs, pool=np.int64(pool))
    return atomic_write(Path(path), write)


def fit_rejector(model: nn.Module, reference, held, temperature: float, precision: Precision, device: torch.device,
                 score: str = "combined", coverage: float = COVERAGE, index_size: int = INDEX_CAP,
                 neighbours: int = NEIGHBOURS, multilabel: bool = False) -> Rejector:
    """Fit the score: the index from `reference` (training images, at most `index_size`), the statistics from
    `held` (held-out images the model never trained on). A model of label sets gets `knn` alone: max-softmax says
    nothing there (an image may rightly have none of the labels), so `msp` is refused for it."""
    if score not in SCORES:
        raise UsageError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
    if multilabel and score == "msp":
        raise UsageError("a multi-label model's unknown-image score is the k-NN distance (--score knn); "
                         "max-softmax does not apply to label sets")
    score = "knn" if multilabel else score
    if index_size < neighbours:
        raise UsageError(f"--index-size {index_size} must be at least --neighbours {neighbours}")
    _, train_feats, _ = run_with_features(model, reference, precision, device, index_size)
    index = torch.nn.functional.normalize(train_feats, dim=1).half()
    logits, feats, _ = run_with_features(model, held, precision, device)
    raw = {"msp": msp_score((logits / temperature).log_softmax(1)), "knn": knn_score(feats, index, neighbours)}
    norms = {k: (float(v.mean()), float(v.std().clamp_min(1e-6))) for k, v in raw.items()}
    raw["combined"] = sum((raw[s] - norms[s][0]) / norms[s][1] for s in ("msp", "knn")) / 2
    return Rejector(score, {k: v.sort().values for k, v in raw.items()}, norms, coverage, neighbours, index)


def risk_coverage(score: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, accuracy of the kept images) when keeping the most familiar images first, one point per image."""
    order = np.argsort(score, kind="stable")
    kept = np.arange(1, len(order) + 1)
    return kept / len(order), np.cumsum(correct[order]) / kept


def rejection_metrics(rejector: Rejector, score: np.ndarray, rejected: np.ndarray, correct: np.ndarray,
                      threshold: float) -> dict:
    """Accuracy against coverage on known images (`score`, `rejected` and `correct` per image): the area over the
    curve, the accuracy at some coverages, and the coverage and accuracy at `threshold`."""
    cov, acc = risk_coverage(score, correct)
    keep = ~rejected
    return {"score": rejector.score, "threshold": threshold, "coverage": float(keep.mean()),
            "accuracy_kept": float(correct[keep].mean()) if keep.any() else None,
            "accuracy_all": float(correct.mean()), "aurc": float(np.mean(1 - acc)),
            "accuracy_at_coverage": {f"{c:.2f}": float(acc[max(0, int(np.ceil(c * len(acc))) - 1)])
                                     for c in (0.5, 0.8, 0.9, 0.95, 1.0)}}


def unknown_metrics(rejector: Rejector, known: tuple[torch.Tensor, torch.Tensor],
                    unknown: tuple[torch.Tensor, torch.Tensor], rejected: torch.Tensor) -> dict:
    """How each score tells known from unknown images (calibrated log-probabilities, embeddings of each; scikit-
    learn's ROC AUC) and the share of unknown images `rejected`."""
    from sklearn.metrics import roc_auc_score

    known_raw, unknown_raw = rejector.raw(*known), rejector.raw(*unknown)
    target = np.r_[np.zeros(len(known[0])), np.ones(len(unknown[0]))]
    return {"count": len(unknown[0]), "rejected": float(rejected.float().mean()),
            "auroc": {k: float(roc_auc_score(target, np.r_[known_raw[k].numpy(), unknown_raw[k].numpy()]))
                      for k in known_raw}}


def plot_rejection(metrics: dict, score: np.ndarray, correct: np.ndarray, out_dir: Path,
                   unknown_score: np.ndarray | None = None) -> list[Path]:
    """risk_coverage.png (accuracy of the kept images against the share kept) and, with the unknown images' ood
    scores, unknown_scores.png (each set's ood scores and the threshold)."""
    cov, acc = risk_coverage(score, correct)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(100 * cov, 100 * acc, lw=2)
    ax.axvline(100 * metrics["coverage"], color="gray", ls="--",
               label=f"threshold {metrics['threshold']:.2f}: {100 * metrics['coverage']:.1f}% kept")
    ax.set(xlabel="images kept (coverage) %", ylabel="accuracy of the kept images %",
           title=f"Accuracy against coverage ({metrics['score']} score)")
    ax.legend(loc="lower left")
    paths = [save_fig(fig, out_dir / "risk_coverage.png")]
    if unknown_score is not None:
        u = metrics["unknown"]
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.linspace(0, 1, 41)
        ax.hist(score, bins, alpha=0.6, density=True, label="known classes")
        ax.hist(unknown_score, bins, alpha=0.6, density=True, label="unknown images")
        ax.axvline(metrics["threshold"], color="k", ls="--",
                   label=f"threshold: {100 * u['rejected']:.0f}% of unknowns rejected")
        ax.set(xlabel="ood score (share of validation images more familiar)", ylabel="density",
               title=f"Known vs unknown (AUROC {u['auroc'][metrics['score']]:.3f})")
        ax.legend(loc="upper left")
        paths.append(save_fig(fig, out_dir / "unknown_scores.png"))
    return paths


def judge_split(model: nn.Module, loader, rejector: Rejector, temperature: float, precision: Precision,
                device: torch.device, out_dir: Path, threshold: float | None = None,
                unknown: torch.Tensor | None = None) -> dict:
    """The rejection figures of a labelled split (and of `unknown`, a batch of preprocessed images of other
    classes), with their pictures in `out_dir`; the threshold defaults to the fitted coverage."""
    threshold = rejector.coverage if threshold is None else threshold
    logits, feats, labels = run_with_features(model, loader, precision, device)
    log_probs = (logits / temperature).log_softmax(1)
    score, rejected = rejector.judge(log_probs, feats, threshold)
    correct = (log_probs.argmax(1) == labels).numpy().astype(float)
    metrics = rejection_metrics(rejector, score.numpy(), rejected.numpy(), correct, threshold)
    unknown_score = None
    if unknown is not None:
        u_logits, u_feats, _ = run_with_features(model, [(c.to(device), torch.zeros(len(c)))
                                                         for c in unknown.split(256)], precision, device)
        pair = ((u_logits / temperature).log_softmax(1), u_feats)
        u_score, u_rejected = rejector.judge(*pair, threshold)
        metrics["unknown"] = unknown_metrics(rejector, (log_probs, feats), pair, u_rejected)
        unknown_score = u_score.numpy()
    plot_rejection(metrics, score.numpy(), correct, out_dir, unknown_score)
    return metrics


def unknown_images(path: str, preprocess: dict, classes: list[str], limit: int = 20_000) -> torch.Tensor:
    """Images of classes outside the training set (files, a folder, a glob), preprocessed as the model expects;
    refused in one line when a class folder among them is one the model knows."""
    from cnnmode.data.inference_inputs import expand_inputs, load_images

    paths = expand_inputs([path])[:limit]
    overlap = sorted({p.parent.name for p in paths} & set(classes))
    if overlap:
        raise UsageError(f"--unknown {path} holds images of classes the model was trained on "
                         f"({', '.join(overlap)}); give only images of other classes")
    batch, ok, _ = load_images(paths, preprocess)
    if not ok:
        raise UsageError(f"--unknown {path}: no readable images there")
    return batch


def calibrate(target: str, data: str | None = None, score: str = "combined", coverage: float = COVERAGE,
              index_size: int = INDEX_CAP, neighbours: int = NEIGHBOURS, device: str = "auto") -> tuple[Path, Rejector]:
    """`cnnmode calibrate`: fit (or refit) a model's unknown-image score on its run's held-out images (or on
    `data`'s) and write it beside the artifact; returns (the file, the score). A multi-label model's is `knn`."""
    from cnnmode.artifact import load_artifact
    from cnnmode.data.trained_model_data import data_for_model
    from cnnmode.engine.device import pick_device, pick_precision
    from cnnmode.rundir import resolve_target
    from cnnmode.unknowns import check_coverage, save_rejector

    check_coverage(coverage)  # before any work
    where = resolve_target(target)
    dev = pick_device(device)
    art = load_artifact(where, dev)
    cfg, bundle = data_for_model(where, art.preprocess, art.classes, data, "calibrating", dev)
    held = bundle.calib if bundle.val_is_test else bundle.val  # never the test split
    rejector = fit_rejector(art.model, bundle.reference, held, art.temperature, pick_precision(cfg.train.amp, dev),
                            dev, score, coverage, index_size, neighbours, art.multilabel)
    return save_rejector(rejector, where.file), rejector
