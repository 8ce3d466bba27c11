"""Label sets from a CSV list: detection, multi-hot labels through splits and both loaders, stratification by
the rarest label, balanced draws, and one-line errors for lists that cannot be label sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnmode.config import resolve_config
from cnnmode.data import build_data
from cnnmode.data.csvlist import list_layout
from cnnmode.data.holdouts import stratified_holdout
from cnnmode.data.labels import counts, multi_hot, sample_weights, split_cell, strata
from cnnmode.errors import UsageError
from tests.conftest import CLASSES, make_multilabel_image

CPU = torch.device("cpu")


def test_cells_split_on_semicolons_and_drop_blanks_and_repeats():
    assert split_cell(" cat ;dog;;cat ") == ["cat", "dog"]
    assert split_cell("") == []
    assert multi_hot([[0, 2], [], [1]], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


def test_rarest_label_stratifies_and_empty_sets_are_a_stratum():
    labels = multi_hot([[0, 1], [0], [0, 2], [], [0]], 3)  # label 0 common, 1 and 2 rare
    assert strata(labels).tolist() == [1, 0, 2, 3, 0]
    assert counts(labels, 3).tolist() == [4, 1, 1]
    weights = sample_weights(labels)
    assert weights[1] == pytest.approx(0.5) and weights[0] == pytest.approx(1.0) and weights[3] == pytest.approx(1.0)


def test_holdout_of_label_sets_keeps_every_rare_label_in_both_parts():
    gen = torch.Generator().manual_seed(0)
    sets = [[int(c) for c in torch.nonzero(torch.rand(4, generator=gen) < 0.4).flatten()] for _ in range(400)]
    sets += [[3]] * 4  # a rare label, four images
    labels = multi_hot(sets, 4)
    kept, held = stratified_holdout(labels, 0.25, seed=1)
    assert len(set(kept.tolist()) & set(held.tolist())) == 0 and len(kept) + len(held) == len(labels)
    assert labels[held, 3].sum() >= 1 and labels[kept, 3].sum() >= 1


def write_list(root, rows: list[str]) -> str:
    rng = np.random.default_rng(0)
    (root / "im").mkdir(parents=True, exist_ok=True)
    for i in range(12):
        make_multilabel_image([i % 3], rng).save(root / "im" / f"{i}.png")
    (root / "l.csv").write_text("path,labels,split\n" + "\n".join(rows) + "\n")
    return str(root / "l.csv")


def test_auto_detects_label_sets_and_single_refuses_them(tmp_path):
    path = write_list(tmp_path, ["im/0.png,circle;square,train", "im/1.png,,train", "im/3.png,stripes,train",
                                 "im/2.png,stripes,test"])
    _, layout = list_layout(path)
    assert layout.multilabel and layout.classes == ["circle", "square", "stripes"]
    assert layout.splits["train"] == [("im/0.png", (0, 1)), ("im/1.png", ()), ("im/3.png", (2,))]
    with pytest.raises(UsageError, match="row 1: data.task=single needs exactly one class name"):
        list_layout(path, "single")


def test_multilabel_task_on_a_plain_list_and_unknown_labels(tmp_path):
    path = write_list(tmp_path, ["im/0.png,circle,train", "im/1.png,square,train", "im/2.png,stripes,train"])
    assert not list_layout(path)[1].multilabel
    assert list_layout(path, "multilabel")[1].splits["train"][0] == ("im/0.png", (0,))
    bad = write_list(tmp_path / "b", ["im/0.png,circle;square,train", "im/1.png,dog;circle,test"])
    with pytest.raises(UsageError, match="row 2: label 'dog' is not among the train labels"):
        list_layout(bad)
    evil = write_list(tmp_path / "c", ["im/0.png,circle;../x,train"])
    with pytest.raises(UsageError, match="must be a plain class name"):
        list_layout(evil)


def test_bundle_and_loaders_carry_multi_hot_rows(tiny_multilabel, tmp_path):
    cfg = resolve_config(overrides=[f"data.path={tiny_multilabel}", f"data.root={tmp_path}", "train.batch_size=16",
                                    "aug.mixup=0.4"])
    data = build_data(cfg, CPU)
    assert data.multilabel and data.classes == sorted(CLASSES)
    assert data.train.labels.dtype == torch.uint8 and data.train.labels.shape[1] == 3
    x, y = next(iter(data.test))
    assert y.dtype == torch.uint8 and y.shape == (len(x), 3)
    data.train.set_epoch(1)
    _, mixed = next(iter(data.train))
    assert mixed.dtype.is_floating_point and mixed.shape[1] == 3 and ((mixed >= 0) & (mixed <= 1)).all()


def test_a_folder_tree_cannot_be_multilabel(tiny_tree, tmp_path):
    cfg = resolve_config(overrides=[f"data.path={tiny_tree}", f"data.root={tmp_path}", "data.task=multilabel"])
    with pytest.raises(UsageError, match="data.task=multilabel needs label sets: give a .csv list"):
        build_data(cfg, CPU)


def test_the_same_list_read_as_single_and_as_label_sets_is_cached_apart(tmp_path):
    rows = [f"im/{i}.png,{('circle', 'square', 'stripes')[i % 3]},{'test' if i >= 9 else 'train'}" for i in range(12)]
    path = write_list(tmp_path, rows)
    make = lambda task: build_data(resolve_config(overrides=[f"data.path={path}", f"data.root={tmp_path / 'r'}",  # noqa: E731
                                                             f"data.task={task}", "data.val_split=0"]), CPU)
    assert make("auto").train.labels.ndim == 1
    assert make("multilabel").train.labels.shape[1] == 3
    assert make("auto").train.labels.ndim == 1


def test_data_split_of_label_sets_writes_a_list_and_refuses_class_folders(tiny_multilabel, tmp_path):
    from cnnmode.data.tools.split import split_dataset

    with pytest.raises(UsageError, match="holds label sets, which class folders cannot: use --mode csv"):
        split_dataset(str(tiny_multilabel), tmp_path / "tree", mode="link")
    counts = split_dataset(str(tiny_multilabel), tmp_path / "csv", val=0.2, test=0.0, mode="csv")
    assert set(counts["val"]) <= set(CLASSES) and sum(counts["val"].values()) > 0
    data = build_data(resolve_config(overrides=[f"data.path={tmp_path / 'csv' / 'index.csv'}",
                                                f"data.root={tmp_path / 'r'}"]), CPU)
    assert data.multilabel and data.classes == sorted(CLASSES)
