"""`cnnmode predict` and `Predictor`: images → top-k classes, from a .pt artifact, an ONNX or a TorchScript file."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnmode.data.inference_inputs import expand_inputs, load_images
from cnnmode.deploy.runtime import open_runner
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write_text
from cnnmode.rundir import resolve_target


class Ranked:
    """Something with top-k (class, probability) pairs, best first: its label and confidence."""
    top: list[tuple[str, float]]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]


@dataclass
class Prediction(Ranked):
    """One image's result: top-k (class, probability) pairs and whether the best is under the threshold; for a
    multi-label model also the labels present (most probable first) and every label's probability."""
    file: str
    top: list[tuple[str, float]]
    uncertain: bool = False
    labels: list[str] | None = None
    probs: dict[str, float] | None = None
    unknown: bool | None = None  # with --reject: True when the image is unlike the training classes
    ood_score: float | None = None  # with --reject: the share of validation images more familiar than this one


@dataclass
class Results:
    """Predictions plus the inputs that could not be read (path, reason)."""
    predictions: list[Prediction]
    failed: list[tuple[str, str]] = field(default_factory=list)


class Predictor:
    """Runs any CNN Mode model format on images with the preprocessing it was trained with: an artifact or run
    folder (on any backend of the runtime registry), or an exported .onnx/.ts file (on its own runtime)."""

    def __init__(self, model_path: str | Path, device: str = "auto", backend: str | None = None,
                 calib_data: str | None = None, reject: str = "off", coverage: float | None = None) -> None:
        where = resolve_target(model_path)
        self.runner, _ = open_runner(where, backend, device, calib_data)
        self.reject_at = self.runner.reject_threshold(reject, coverage)
        self.path = where.file
        self.preprocess = self.runner.preprocess | {"classes": self.runner.classes}
        self.classes: list[str] = self.runner.classes

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw model outputs for a preprocessed batch."""
        return self.runner(batch)

    def predict(self, inputs: list[str | Path], topk: int = 5, threshold: float = 0.0,
                batch_size: int = 64) -> Results:
        """Predict files, folders or glob patterns in batches; unreadable files are listed, not fatal. For a
        multi-label model `threshold` (above 0) replaces every label's fitted threshold."""
        if topk < 1 or batch_size < 1 or not 0 <= threshold <= 1:
            raise UsageError(f"--topk and --batch-size must be >= 1 and --threshold in [0, 1] (got topk={topk}, "
                             f"batch size {batch_size}, threshold {threshold})")
        paths = expand_inputs([str(i) for i in inputs])
        k = min(topk, len(self.classes))
        results = Results([])
        for start in range(0, len(paths), batch_size):
            batch, ok, failed = load_images(paths[start:start + batch_size], self.preprocess)
            results.failed += [(str(p), r) for p, r in failed]
            if not ok:
                continue
            logits, ood, unknown = self.runner.assess(batch, self.reject_at)
            probs = self.runner.probabilities(logits)
            top = probs.topk(k, dim=1)
            present = self.runner.present(probs, threshold) if self.runner.multilabel else None
            for n, (path, values, indices) in enumerate(zip(ok, top.values.tolist(), top.indices.tolist())):
                pairs = [(self.classes[i], float(v)) for i, v in zip(indices, values)]
                verdict = {"unknown": None if unknown is None else bool(unknown[n]),
                           "ood_score": None if ood is None else round(float(ood[n]), 4)}
                if self.runner.multilabel:  # an unknown image has no labels
                    results.predictions.append(Prediction(
                        str(path), pairs, labels=[] if verdict["unknown"] else [self.classes[i] for i in present[n]],
                        probs={c: round(float(v), 6) for c, v in zip(self.classes, probs[n].tolist())}, **verdict))
                else:
                    results.predictions.append(Prediction(str(path), pairs, pairs[0][1] < threshold, **verdict))
        return results


def _json_row(p: Prediction) -> dict:
    row = {"file": p.file, "label": p.label, "confidence": p.confidence, "uncertain": p.uncertain,
           "top": [{"class": c, "prob": v} for c, v in p.top]}
    if p.labels is not None:  # label sets: `label` is the most probable present label (None when none is)
        row |= {"label": p.labels[0] if p.labels else None, "labels": p.labels, "probs": p.probs}
    if p.unknown is not None:  # --reject: an unknown image has no label
        row |= {"label": None if p.unknown else p.label, "unknown": p.unknown, "ood_score": p.ood_score}
    return row


def write_results(results: Results, out: Path) -> Path:
    """CSV (one row per image, top-k columns) or JSON, by the file's suffix."""
    if out.suffix == ".json":
        data = {"predictions": [_json_row(p) for p in results.predictions],
                "failed": [{"file": f, "reason": r} for f, r in results.failed]}
        return atomic_write_text(out, json.dumps(data, indent=2))
    if out.suffix != ".csv":
        raise UsageError(f"--out must end in .csv or .json, not {out.name}")
    buf = io.StringIO()
    writer = csv.writer(buf)
    judged = bool(results.predictions) and results.predictions[0].unknown is not None  # --reject: two columns
    head = ["unknown", "ood_score"] if judged else []

    def verdict(p: Prediction) -> list:
        return [int(p.unknown), f"{p.ood_score:.4f}"] if judged else []

    if results.predictions and results.predictions[0].labels is not None:  # label sets: one column per label
        classes = list(results.predictions[0].probs)
        writer.writerow(["file", "labels"] + head + [f"p_{c}" for c in classes])
        for p in results.predictions:
            writer.writerow([p.file, ";".join(p.labels)] + verdict(p) + [f"{p.probs[c]:.6f}" for c in classes])
        return atomic_write_text(out, buf.getvalue())
    k = max((len(p.top) for p in results.predictions), default=0)
    writer.writerow(["file", "label", "confidence", "uncertain"] + head
                    + [c for i in range(k) for c in (f"top{i + 1}", f"prob{i + 1}")])
    for p in results.predictions:
        writer.writerow([p.file, "" if p.unknown else p.label, f"{p.confidence:.6f}", int(p.uncertain)] + verdict(p)
                        + [x for c, v in p.top for x in (c, f"{v:.6f}")])
    return atomic_write_text(out, buf.getvalue())
