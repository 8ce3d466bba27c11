"""Saying "I don't know": an out-of-distribution score fitted on held-out images and stored beside the artifact.

Two signals, each higher for a less familiar image: `msp`, the calibrated maximum softmax probability (as
-log of it, which keeps its precision where the probability is within 1e-7 of 1), and `knn`, the cosine distance from the image's embedding (the classifier head's input) to its k-th nearest
training embedding (Sun et al., 2022). `combined` is the mean of the two, each standardised on the held-out
images. A score is reported as the share of held-out (in-distribution) images that score lower, so a threshold
of 0.95 rejects what is less familiar than 95% of validation images and keeps 95% of them (the coverage).

The file `<artifact stem>.unknowns.pt` (`model.unknowns.pt` in a run folder) holds the fitted statistics and the
index: at most INDEX_CAP training embeddings in float16 (5,000 x 512 features is 5 MB).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnmode.config.schema import COVERAGE, INDEX_CAP, NEIGHBOURS, SCORES  # noqa: F401  (defaults live there)
from cnnmode.errors import UsageError
from cnnmode.files import atomic_torch_save, torch_load
from cnnmode.models import captured, head_module

FORMAT = "cnnmode-unknowns"


def unknowns_path(artifact: Path) -> Path:
    """Where an artifact's fitted score lives: `model.pt` → `model.unknowns.pt`."""
    return Path(artifact).with_name(Path(artifact).stem + ".unknowns.pt")


def msp_score(log_probs: torch.Tensor) -> torch.Tensor:
    """-log of the maximum (calibrated) class probability per image, from log-probabilities."""
    return -log_probs.float().max(-1).values


def knn_score(features: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """Cosine distance from each image's embedding to its k-th nearest neighbour among `index` (unit rows)."""
    sims = F.normalize(features.float(), dim=1) @ index.float().T
    return 1 - sims.topk(min(k, index.shape[0]), dim=1).values[:, -1]


def logits_and_features(model: nn.Module, batch: torch.Tensor, forward=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, embeddings) of a batch: the model's output and its classifier head's input, in fp32. `forward`
    (default: the model itself) is what runs the batch, e.g. a backend's bf16 wrapper around `model`."""
    with captured(head_module(model), take_input=True) as seen, torch.no_grad():
        logits = (forward or model)(batch)
    return logits.float(), seen[0].float().flatten(1)


@dataclass
class Rejector:
    """A fitted out-of-distribution score. `held` keeps, per score, the held-out images' raw values sorted, so a
    raw value becomes the share of in-distribution images below it; `norms` standardise the combination."""
    score: str
    held: dict[str, torch.Tensor]
    norms: dict[str, tuple[float, float]]
    coverage: float = COVERAGE
    neighbours: int = NEIGHBOURS
    index: torch.Tensor | None = None  # (M, D) unit rows, float16; None: max-softmax only (an exported model)

    @property
    def needs_features(self) -> bool:
        """True when the score uses the embedding index."""
        return self.score != "msp"

    def raw(self, log_probs: torch.Tensor, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each score's raw value per image from calibrated log-probabilities (knn and combined only when
        `features` and the index are there)."""
        out = {"msp": msp_score(log_probs)}
        if features is not None and self.index is not None:
            out["knn"] = knn_score(features, self.index, self.neighbours)
            out["combined"] = sum((out[s] - self.norms[s][0]) / self.norms[s][1] for s in ("msp", "knn")) / 2
        return out

    def percentile(self, kind: str, raw: torch.Tensor) -> torch.Tensor:
        """The share of held-out images whose `kind` score is below each raw value: 0 familiar .. 1 unlike any."""
        held = self.held[kind]
        return torch.searchsorted(held, raw.float().contiguous(), right=True).float() / len(held)

    def judge(self, log_probs: torch.Tensor, features: torch.Tensor | None, threshold: float) -> tuple[
            torch.Tensor, torch.Tensor]:
        """(ood score in [0, 1], unknown) per image from calibrated log-probabilities, by the stored score
        (max-softmax alone without features)."""
        kind = self.score if features is not None and self.index is not None else "msp"
        score = self.percentile(kind, self.raw(log_probs, features)[kind])
        return score, score > threshold

    def state(self, with_index: bool = True) -> dict:
        """Plain contents for a file or a preprocess.json (tensors become lists without the index)."""
        out = {"format": FORMAT, "version": 1, "score": self.score, "coverage": self.coverage,
               "neighbours": self.neighbours, "norms": {k: list(v) for k, v in self.norms.items()}}
        if with_index:
            return out | {"held": dict(self.held), "index": self.index}
        return out | {"score": "msp", "held": {"msp": self.held["msp"].tolist()}}


def from_state(state: dict, where: str) -> Rejector:
    """A Rejector from `Rejector.state()` (a file or a preprocess.json's `reject`), refused in one line if damaged."""
    try:
        if state.get("format") != FORMAT or state["score"] not in SCORES:
            raise KeyError("format")
        held = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in state["held"].items()}
        index = state.get("index")
        rejector = Rejector(state["score"], held, {k: (float(a), float(b)) for k, (a, b) in state["norms"].items()},
                            float(state["coverage"]), int(state["neighbours"]),
                            None if index is None else torch.as_tensor(index))
        if rejector.score not in held or (rejector.needs_features and rejector.index is None):
            raise KeyError("score")
        return rejector
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UsageError(f"{where} is not a fitted unknown-image score; refit it with `cnnmode calibrate RUN`") \
            from None


def save_rejector(rejector: Rejector, artifact: Path) -> Path:
    """Write the score beside its artifact (atomically); returns the file."""
    return atomic_torch_save(rejector.state(), unknowns_path(artifact))


def load_rejector(artifact: Path | None) -> Rejector | None:
    """The score fitted for `artifact`, or None when it has none."""
    path = unknowns_path(artifact) if artifact is not None else None
    if path is None or not path.is_file():
        return None
    return from_state(torch_load(path), str(path))


def check_coverage(coverage: float) -> None:
    """Refuse, in one line, a coverage that is not a share between 0 and 1."""
    if not 0 < coverage < 1:
        raise UsageError(f"--coverage {coverage}: give the share of known images to keep, between 0 and 1 (e.g. 0.95)")


def reject_threshold(reject: str | float | None, coverage: float | None = None,
                     rejector: Rejector | None = None) -> float | None:
    """The ood-score threshold above which an image is unknown: None for `off`; the target coverage for `auto`
    (`coverage`, else the one fitted); a number in (0, 1) as it is. Refused in one line, naming the choices."""
    text = "off" if reject is None else str(reject).strip().lower()
    if text == "off":
        return None
    if coverage is not None:
        check_coverage(coverage)
    if text == "auto":
        threshold = coverage if coverage is not None else (rejector.coverage if rejector else COVERAGE)
    else:
        try:
            threshold = float(text)
        except ValueError:
            raise UsageError(f"--reject {reject!r}: choose auto, off or a threshold between 0 and 1") from None
        if not 0 < threshold < 1:
            raise UsageError(f"--reject {reject!r}: a threshold is a share of validation images, between 0 and 1")
    if rejector is None:
        raise UsageError("--reject needs the model's fitted unknown-image score, and this model has none; fit it "
                         "with `cnnmode calibrate RUN` (runs trained before it existed) or use --reject off")
    return threshold
