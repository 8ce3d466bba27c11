"""`cnnmode data labels`: likely mislabelled images, ranked from held-out predicted probabilities with cleanlab's
confident learning (Northcutt et al., 2021). A `cv` study gives every training image an out-of-fold prediction;
a single run gives its own held-out images only."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnmode.config import config_from_dict, read_yaml
from cnnmode.errors import UsageError
from cnnmode.rundir import RunDir


@dataclass
class HeldOut:
    """Images with their given label and a prediction from a model that did not train on them."""
    names: list[str]
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    data: str  # the data path the runs trained on
    covered: str  # "all N training images (K folds)" or "the run's M held-out images of N"


def _read(run: RunDir) -> dict:
    if not run.heldout.is_file():
        raise UsageError(f"{run.path} has no held-out predictions ({run.heldout.name}); runs trained before this "
                         "version lack them: train it again (cnnmode cv ... runs every fold)")
    with np.load(run.heldout, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _classes_and_data(run: RunDir) -> tuple[list[str], str]:
    metrics = json.loads(run.metrics.read_text())
    if metrics.get("task") == "multilabel":
        raise UsageError(f"{run.path} is a multi-label run; `data labels` ranks single-label data")
    return metrics["classes"], str(config_from_dict(read_yaml(run.config)).data.path)


def held_out(target: Path) -> HeldOut:
    """The out-of-fold predictions of a cv study (every `fold-*` run, which must cover the data exactly once), or
    the held-out predictions of one run folder."""
    target = Path(target)
    folds = sorted(p for p in target.glob("fold-*") if p.is_dir())
    if not folds:
        run = RunDir(target)
        if not run.metrics.is_file():
            raise UsageError(f"{target} is neither a finished run folder nor a cv study folder (cnnmode cv ...)")
        part = _read(run)
        classes, data = _classes_and_data(run)
        return HeldOut(part["names"].tolist(), part["labels"], part["probs"], classes, data,
                       f"the run's {len(part['labels'])} held-out images of {int(part['pool'])}")
    expected = json.loads((target / "cv.json").read_text())["folds"] if (target / "cv.json").is_file() else None
    parts = [_read(RunDir(f)) for f in folds]
    classes, data = _classes_and_data(RunDir(folds[0]))
    names = [n for p in parts for n in p["names"].tolist()]
    pool = {int(p["pool"]) for p in parts}
    if (expected not in (None, len(folds)) or len(pool) != 1 or len(set(names)) != len(names)
            or len(names) != pool.pop()):
        raise UsageError(f"the cv study {target} does not cover its data once: {len(folds)} fold folders"
                         + (f" of {expected}" if expected else "") + f", {len(set(names))} distinct held-out images "
                         f"of {int(parts[0]['pool'])}; finish it with the same `cnnmode cv` command")
    return HeldOut(names, np.concatenate([p["labels"] for p in parts]), np.concatenate([p["probs"] for p in parts]),
                   classes, data, f"all {len(names)} training images ({len(folds)} folds)")


def label_quality(held: HeldOut) -> np.ndarray:
    """cleanlab's label quality per image (self-confidence: the probability of the given label; low = suspect)."""
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(held.labels.astype(int), _normalised(held), method="self_confidence")


def _normalised(held: HeldOut) -> np.ndarray:
    return held.probs / held.probs.sum(1, keepdims=True)  # float32 rows that cleanlab finds sum to 1


def rank_label_errors(held: HeldOut) -> list[dict]:
    """Every image cleanlab flags as a label issue, most likely first: file, given label, suggested label (the
    model's), and the label quality score (see `label_quality`)."""
    from cleanlab.filter import find_label_issues

    labels, probs = held.labels.astype(int), _normalised(held)
    flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    quality = label_quality(held)
    return [{"file": held.names[i], "given": held.classes[labels[i]], "suggested": held.classes[int(probs[i].argmax())],
             "score": round(float(quality[i]), 6)} for i in flagged]


def quality_order(held: HeldOut) -> np.ndarray:
    """Indices of every image, least likely correctly labelled first."""
    return np.argsort(label_quality(held), kind="stable")


def relative_name(name: str, data: str) -> str:
    """An image's name relative to its data folder (streamed runs record full paths)."""
    path, root = Path(name), Path(data)
    if path.is_absolute() and root.is_dir():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return name
    return name


def write_label_report(held: HeldOut, issues: list[dict], out_dir: Path, top: int = 24) -> dict[str, Path]:
    """label_issues.csv (every flagged image, most likely first) and suspects.png (the first `top` of them with
    their given and suggested labels); returns the files."""
    import csv
    import io

    from cnnmode.files import atomic_write_text

    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "file", "given", "suggested", "score"])
    for rank, row in enumerate(issues, 1):
        writer.writerow([rank, row["file"], row["given"], row["suggested"], f"{row['score']:.6f}"])
    files = {"csv": atomic_write_text(out_dir / "label_issues.csv", buf.getvalue())}
    if issues:
        files["picture"] = suspects_figure(issues[:top], held.data, out_dir / "suspects.png")
    return files


def suspects_figure(rows: list[dict], data: str, out: Path) -> Path:
    """A grid of the suspect images, each titled `given → suggested (score)`; unreadable ones left blank."""
    import io
    import math

    from PIL import Image

    from cnnmode.data.decode import DECODE_ERRORS, pil_to_mode
    from cnnmode.data.tools.dataset_figures import plt, save_fig
    from cnnmode.data.tools.listing import list_dataset, read_entries, training_limits

    images = {}
    try:
        limits = training_limits()
        listing = list_dataset(data, limits)
        wanted = {relative_name(r["file"], data) for r in rows}
        for entry, blob, _ in read_entries(listing, limits, entries=[e for e in listing.entries if e.name in wanted]):
            try:
                with Image.open(io.BytesIO(blob)) as img:
                    images[entry.name] = pil_to_mode(img, 3)
            except DECODE_ERRORS:
                continue
    except UsageError:
        pass  # the data moved since training: the titles still say what to look at
    side = math.ceil(math.sqrt(len(rows)))
    fig, axes = plt.subplots(side, side, figsize=(2.3 * side, 2.5 * side), squeeze=False)
    for ax, i in zip(axes.ravel(), range(side * side)):
        ax.axis("off")
        if i < len(rows):
            r = rows[i]
            img = images.get(relative_name(r["file"], data))
            if img is not None:
                ax.imshow(img)
            ax.set_title(f"{r['given']} → {r['suggested']}\n({r['score']:.2f})", fontsize=8,
                         color="black" if img is not None else "gray")
    fig.suptitle("Likely label errors: given → suggested (probability of the given label)")
    return save_fig(fig, out)


def quarantine_suspects(issues: list[dict], data: str, folder: Path) -> tuple[int, Path]:
    """Move the flagged images out of the data folder into `folder` (as `data check --fix` does; undone by
    `data restore`)."""
    from cnnmode.data.tools.quarantine_files import quarantine

    kind = "folder" if Path(data).is_dir() else "archive or list"
    report = {"kind": kind, "source": data,
              "to_move": [{"path": relative_name(r["file"], data),
                           "reason": f"label: given {r['given']}, likely {r['suggested']} ({r['score']:.3f})"}
                          for r in issues]}
    return quarantine(report, Path(data), folder)
