"""`embed` and `similar`: features of the right shape, saved with paths and labels, and the query itself first."""
from __future__ import annotations

import numpy as np
import pytest

from cnnmode.deploy.embed import embed_images, load_embeddings, most_similar, save_embeddings
from cnnmode.errors import UsageError
from tests.conftest import run_cli


def test_embeddings_shape_labels_and_round_trip(trained_run, tiny_tree, tmp_path):
    emb, failed = embed_images(trained_run, [str(tiny_tree / "test")])
    assert emb.features.shape == (30, 128) and not failed  # SimpleCNN's head takes 128 features
    assert sorted(set(emb.labels)) == ["circle", "square", "stripes"]
    save_embeddings(emb, tmp_path / "e.npy")
    back = load_embeddings(tmp_path / "e.npy")
    assert np.array_equal(back.features, emb.features) and back.paths == emb.paths and back.labels == emb.labels
    save_embeddings(emb, tmp_path / "e.parquet")
    table = load_embeddings(tmp_path / "e.parquet")
    assert np.allclose(table.features, emb.features) and table.paths == emb.paths and table.labels == emb.labels
    conv, _ = embed_images(trained_run, [str(tiny_tree / "test" / "circle")], layer="1.0")
    assert conv.features.shape == (10, 64)  # the second block's first conv, average-pooled
    with pytest.raises(UsageError, match="no layer named"):
        embed_images(trained_run, [str(tiny_tree / "test")], layer="nope")


def test_similar_returns_the_query_first(trained_run, tiny_tree, tmp_path):
    out = run_cli("embed", str(trained_run), str(tiny_tree / "test"), "--out", str(tmp_path / "i.npy"))
    assert out.returncode == 0 and "30 images x 128 features" in out.stdout, out.stderr
    query = tiny_tree / "test" / "square" / "0003.png"
    hits = most_similar(trained_run, query, tmp_path / "i.npy", k=4)
    assert hits[0][0] == str(query) and hits[0][2] == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 4 and all(a[2] >= b[2] for a, b in zip(hits, hits[1:]))
    cli = run_cli("similar", str(trained_run), str(query), "--index", str(tmp_path / "i.npy"), "--k", "2")
    assert cli.returncode == 0 and str(query) in cli.stdout
    missing = run_cli("similar", str(trained_run), str(query), "--index", str(tmp_path / "none.npy"))
    assert missing.returncode == 2 and "cnnmode embed" in missing.stderr
