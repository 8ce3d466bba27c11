"""`cnnmode baseline hog-svm`: HOG features (scikit-image) + an SVM (scikit-learn), reported like a CNN run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnmode.config import Config, dump_yaml
from cnnmode.data import build_data
from cnnmode.data.loaders import TensorLoader
from cnnmode.experiments.options import BaselineOptions
from cnnmode.engine.device import pick_device
from cnnmode.errors import UsageError
from cnnmode.evaluation.evaluate import write_evaluation
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir, new_run_name


def hog_features(images: torch.Tensor, size: int, cell: int = 4) -> np.ndarray:
    """Colour HOG (9 orientations, `cell`-pixel cells, 2x2-cell blocks, square-root gamma) of uint8 (N, C, H, W)
    images at `size` px; the images are split over the CPU's cores."""
    from joblib import Parallel, delayed
    from skimage.feature import hog

    x = _resized(images, size).permute(0, 2, 3, 1).numpy()
    multichannel = x.shape[-1] > 1

    def chunk(part: np.ndarray) -> np.ndarray:
        return np.stack([hog(img if multichannel else img[..., 0], orientations=9, pixels_per_cell=(cell, cell),
                             cells_per_block=(2, 2), transform_sqrt=True,
                             channel_axis=-1 if multichannel else None) for img in part])

    jobs = min(len(x), torch.get_num_threads() * 4)
    return np.concatenate(Parallel(n_jobs=torch.get_num_threads())(delayed(chunk)(p)
                                                                     for p in np.array_split(x, jobs)))


def thumbnail_features(images: torch.Tensor, side: int) -> np.ndarray:
    """The colours of each image averaged down to `side` x `side` pixels (what HOG, built on gradients, lacks)."""
    x = F.interpolate(images.float(), size=(side, side), mode="area") / 255
    return x.flatten(1).numpy()


def baseline_features(images: torch.Tensor, size: int, cell: int = 4, thumbnail: int = 8) -> np.ndarray:
    """HOG at two scales (`cell` and 2 x `cell` pixels) plus a `thumbnail`-pixel colour image (0 = none)."""
    parts = [hog_features(images, size, cell), hog_features(images, size, 2 * cell)]
    if thumbnail:
        parts.append(thumbnail_features(images, thumbnail))
    return np.hstack(parts)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images.float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x / 255


def make_classifier(kernel: str, components: int, c: float, seed: int):
    """Standardise → (RBF kernel map via Nystroem) → linear SVM, as one scikit-learn pipeline."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    steps = [StandardScaler()]
    if kernel == "rbf":
        steps.append(Nystroem(kernel="rbf", n_components=components, random_state=seed))
    elif kernel != "linear":
        raise UsageError(f"--kernel must be linear or rbf, not {kernel!r}")
    steps.append(LinearSVC(C=c, dual=False, random_state=seed))
    return make_pipeline(*steps)


def run_hog_svm(cfg: Config, options: BaselineOptions | None = None) -> Path:
    """Fit on the train split, score the test split; writes a run folder like a CNN run's (metrics, eval/, plots)."""
    o = options or BaselineOptions()
    img_size, kernel, components, c, cell, thumbnail = o.img_size, o.kernel, o.components, o.C, o.cell, o.thumbnail
    data = build_data(cfg, pick_device("cpu"))
    if not isinstance(data.train, TensorLoader):
        raise UsageError("hog-svm needs small images held in memory (the CIFAR/MNIST kind); "
                         "large-image folders are streamed from disk")
    if data.multilabel:
        raise UsageError("hog-svm is a single-label baseline (one SVM over the classes) and this data is multi-label")
    size = img_size or data.img_size
    run = RunDir(Path(cfg.run.dir) / (cfg.run.name or new_run_name("hog-svm", "")))
    run.path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_x = baseline_features(data.train.images, size, cell, thumbnail)
    clf = make_classifier(kernel, components, c, cfg.train.seed).fit(train_x, data.train.labels.numpy())
    train_time = time.perf_counter() - start
    scores = clf.decision_function(baseline_features(data.test.images, size, cell, thumbnail))
    logits = torch.from_numpy(np.asarray(scores, dtype=np.float32).reshape(len(scores), -1))
    if logits.shape[1] == 1:  # two classes: one margin
        logits = torch.cat([-logits, logits], 1)
    ev = write_evaluation(logits, data.test.labels, data.test, data.classes, data.mean, data.std, run.eval,
                          cfg.train.seed)
    svm = clf[-1]
    metrics = {"test": {k: ev[k] for k in ("accuracy", "top5", "loss", "f1_macro", "ece")}, "val": None,
               "best_epoch": None, "train_time_s": round(train_time, 2),
               "images_per_s": round(len(train_x) / train_time, 1),
               "params": int(svm.coef_.size + svm.intercept_.size), "classes": data.classes, "seed": cfg.train.seed,
               "baseline": {"method": "hog-svm", "kernel": kernel, "nystroem_components": components if kernel == "rbf"
                            else None, "C": c, "img_size": size, "hog_cells": [cell, 2 * cell],
                            "thumbnail": thumbnail, "features": int(train_x.shape[1])}}
    atomic_write_text(run.metrics, json.dumps(metrics, indent=2))
    cfg.model.name = "hog-svm"
    atomic_write_text(run.config, dump_yaml(cfg))
    return run.path
