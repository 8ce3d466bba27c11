"""`embed` and `similar`: a model's features for every image (penultimate layer, or any named layer pooled), saved
with each image's path and label, and the nearest images to a query by cosine similarity (scikit-learn)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from cnnmode.artifact import load_artifact
from cnnmode.data.inference_inputs import expand_inputs, load_images
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write, printable
from cnnmode.models import captured, head_module

FORMATS = (".npy", ".parquet")


@dataclass
class Embeddings:
    """Features (N, D) float32 with the path and label (the parent folder's name when it is a class) of each."""
    features: np.ndarray
    paths: list[str]
    labels: list[str]


def _layer(model: nn.Module, name: str | None) -> tuple[nn.Module, bool]:
    """(module to hook, True to take its input): the head's input by default, else the named layer's output."""
    if not name:
        return head_module(model), True
    try:
        return model.get_submodule(name), False
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:40]
        raise UsageError(f"no layer named {name!r}; layers include: {', '.join(names)}") from None


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C) by global average pooling; (N, D) as it is; anything else flattened."""
    return x.float().mean((2, 3)) if x.ndim == 4 else x.float().flatten(1)


def features_of(model: nn.Module, batch: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Features of a preprocessed batch at `layer` (default: the input of the classifier head)."""
    module, take_input = _layer(model, layer)
    with captured(module, take_input) as seen, torch.no_grad():
        model.eval()(batch.float())
    return _pooled(seen[0])


def embed_images(artifact: str | Path, inputs: list[str], layer: str | None = None, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> tuple[Embeddings, list[tuple[str, str]]]:
    """Features of every image under `inputs` (files, folders, globs) with the artifact's own preprocessing, the
    model on `device`; returns them and the files that could not be read."""
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: give at least 1 image per batch")
    art = load_artifact(artifact)
    device = torch.device(device)
    model = art.model.float().eval().to(device)
    paths = expand_inputs(inputs)
    feats, kept, failed = [], [], []
    for start in range(0, len(paths), batch_size):
        batch, ok, bad = load_images(paths[start:start + batch_size], art.preprocess)
        failed += [(str(p), r) for p, r in bad]
        if ok:
            feats.append(features_of(model, batch.to(device), layer).cpu().numpy())
            kept += ok
    if not kept:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in failed[:3])
        raise UsageError(f"no readable images in {' '.join(inputs)}" + (f" ({reasons})" if reasons else ""))
    labels = [p.parent.name if p.parent.name in art.classes else "" for p in kept]
    return Embeddings(np.concatenate(feats).astype(np.float32), [str(p) for p in kept], labels), failed


def save_embeddings(emb: Embeddings, out: Path) -> Path:
    """`.npy`: one structured array (fields path, label, features; loads without pickle); `.parquet`: columns
    path, label, features (a list of floats; needs pyarrow)."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise UsageError(f"--out {out}: give a {' or '.join(FORMATS)} file")
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError("--out .parquet needs pyarrow (pip install pyarrow); or write .npy") from None
        # Parquet strings are UTF-8: a file name that is not is written with backslash escapes
        table = pa.table({"path": [printable(p) for p in emb.paths], "label": emb.labels,
                          "features": list(emb.features)})
        return atomic_write(out, lambda tmp: pq.write_table(table, tmp))
    dtype = [("path", f"U{max(map(len, emb.paths))}"), ("label", f"U{max(1, *map(len, emb.labels))}"),
             ("features", "f4", (emb.features.shape[1],))]
    rows = np.empty(len(emb.paths), dtype=dtype)
    rows["path"], rows["label"], rows["features"] = emb.paths, emb.labels, emb.features
    return atomic_write(out, lambda tmp: np.save(open(tmp, "wb"), rows, allow_pickle=False))


def load_embeddings(path: Path) -> Embeddings:
    """An index written by `save_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--index {path} does not exist; make one with `cnnmode embed ARTIFACT DATA --out {path}`")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path).to_pydict()
        return Embeddings(np.array(t["features"], dtype=np.float32), t["path"], t["label"])
    try:
        rows = np.load(path, allow_pickle=False)
        return Embeddings(np.asarray(rows["features"], np.float32), rows["path"].tolist(), rows["label"].tolist())
    except (ValueError, KeyError, OSError) as e:
        raise UsageError(f"{path} is not an index written by `cnnmode embed` ({e})") from None


def most_similar(artifact: str | Path, query: str | Path, index: Path, k: int = 5, layer: str | None = None,
                 device: str | torch.device = "cpu") -> list[tuple[str, str, float]]:
    """The `k` images of `index` nearest to `query` by cosine similarity: (path, label, similarity)."""
    from sklearn.metrics.pairwise import cosine_similarity

    emb = load_embeddings(index)
    q, failed = embed_images(artifact, [str(query)], layer, device=device)
    if q.features.shape[1] != emb.features.shape[1]:
        raise UsageError(f"the index holds {emb.features.shape[1]}-dimensional features but --layer gives "
                         f"{q.features.shape[1]}; use the layer the index was built with")
    scores = cosine_similarity(q.features[:1], emb.features)[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [(emb.paths[i], emb.labels[i], float(scores[i])) for i in order]
