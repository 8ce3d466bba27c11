"""`data stats|split|preview|convert` and CSV lists: numbers against numpy, stratified reproducible splits, and
converted or listed datasets that train."""
from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from PIL import Image

from cnnmode.data.tools import check_data, convert_coco, convert_idx, dataset_stats, preview_grid, split_dataset
from cnnmode.errors import UsageError
from tests.conftest import fast_overrides, run_cli
from tests.data.tools.conftest import clean_tree


def tree(tmp_path, counts=None):
    return clean_tree(tmp_path / "ds", counts or {"train": {"a": 50, "b": 30}})


def files_of(root, split):
    return sorted(p.relative_to(root / split).as_posix() for p in (root / split).rglob("*.png"))


def test_split_is_stratified_and_reproducible(tmp_path):
    src = tree(tmp_path)
    counts = split_dataset(str(src), tmp_path / "s1", val=0.2, test=0.1, seed=3)
    assert counts == {"train": {"a": 35, "b": 21}, "val": {"a": 10, "b": 6}, "test": {"a": 5, "b": 3}}
    split_dataset(str(src), tmp_path / "s2", val=0.2, test=0.1, seed=3)
    split_dataset(str(src), tmp_path / "s3", val=0.2, test=0.1, seed=4)
    assert files_of(tmp_path / "s1", "val") == files_of(tmp_path / "s2", "val") != files_of(tmp_path / "s3", "val")
    link = next((tmp_path / "s1" / "train" / "a").iterdir())
    assert link.is_symlink() and link.resolve().parent == (src / "train" / "a").resolve()
    all_names = [n for s in ("train", "val", "test") for n in files_of(tmp_path / "s1", s)]
    assert len(all_names) == len(set(all_names)) == 80  # a partition: nothing lost, nothing twice


def test_split_keeps_an_existing_test_split_and_refuses_a_used_folder(tmp_path):
    src = tree(tmp_path, {"train": {"a": 20, "b": 20}, "test": {"a": 4, "b": 4}})
    counts = split_dataset(str(src), tmp_path / "out", val=0.25, test=0.5, seed=0, mode="copy")
    assert counts["test"] == {"a": 4, "b": 4} and counts["val"] == {"a": 5, "b": 5}
    assert not (tmp_path / "out" / "train" / "a" / "img0.png").is_symlink()
    with pytest.raises(UsageError, match="not an empty folder"):
        split_dataset(str(src), tmp_path / "out")


def test_csv_list_from_split_trains_one_epoch(tmp_path):
    src = tree(tmp_path, {"train": {"a": 12, "b": 12}})
    split_dataset(str(src), tmp_path / "lists", val=0.2, test=0.2, seed=0, mode="csv")
    rows = list(csv.DictReader(open(tmp_path / "lists" / "index.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 24
    report = check_data(str(tmp_path / "lists" / "index.csv"))
    assert report["clean"] and sum(map(len, report["counts"].values())) == 6  # 2 classes in 3 splits
    out = run_cli("train", *fast_overrides(tmp_path, tmp_path / "lists" / "index.csv"), "--quiet")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "runs").glob("*/metrics.json").__next__().read_text())
    assert metrics["classes"] == ["a", "b"] and "balanced_accuracy" in metrics["test"]


def test_csv_list_errors_are_one_line(tmp_path):
    (tmp_path / "bad.csv").write_text("path,label\nx.png,a,train,extra\n")
    out = run_cli("train", *fast_overrides(tmp_path, tmp_path / "bad.csv"))
    assert out.returncode == 2 and "expected path,label[,split]" in out.stderr and out.stderr.count("\n") == 1


def test_stats_match_numpy(tmp_path):
    src = tree(tmp_path, {"train": {"a": 6, "b": 4}, "test": {"a": 2, "b": 2}})
    stats = dataset_stats(str(src), sample=0)
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in (src / "train").rglob("*.png")])
    assert np.allclose(stats["mean"], pixels.mean((0, 1, 2)), atol=1e-4)
    assert np.allclose(stats["std"], pixels.std((0, 1, 2)), atol=1e-4)
    assert stats["sizes"] == {"32x32": 14} and stats["modes"] == {"RGB": 14}
    assert stats["counts"] == {"train": {"a": 6, "b": 4}, "test": {"a": 2, "b": 2}}


def test_stats_count_unreadable_and_truncated_files_apart_from_images(tmp_path):
    src = tree(tmp_path, {"train": {"a": 3, "b": 3}})
    (src / "train/a/junk.png").write_text("not a picture")
    jpeg = src / "train/b/cut.jpg"
    Image.open(src / "train/b/img0.png").resize((256, 256)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:-2000])  # the header still opens; the pixels do not
    stats = dataset_stats(str(src), sample=0)
    assert (stats["images"], stats["unreadable"], stats["stats_from"]) == (6, 2, 6)
    assert stats["counts"] == {"train": {"a": 3, "b": 3}} and stats["sizes"] == {"32x32": 6}


def test_stats_and_preview_cli_write_pictures(tmp_path):
    src = tree(tmp_path, {"train": {"a": 6, "b": 4}, "test": {"a": 3, "b": 3}})
    out = run_cli("data", "stats", str(src), "--quiet", "--plot", str(tmp_path / "s.png"), "--json",
                  str(tmp_path / "s.json"))
    assert out.returncode == 0 and "mean (R, G, B)" in out.stdout, out.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG" and "mean" in json.loads((tmp_path / "s.json").read_text())
    shown = preview_grid(str(src), tmp_path / "p.png", n=4)
    assert shown == {"train": 4, "test": 4}
    assert Image.open(tmp_path / "p.png").size[0] > Image.open(tmp_path / "p.png").size[1]  # two grids side by side


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_conversion_is_exact_and_trains(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    images = rng.integers(0, 256, (30, 28, 28))
    labels = np.arange(30) % 3
    write_idx(raw / "train-images-idx3-ubyte.gz", images)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images[:9])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[:9])
    counts = convert_idx(raw, tmp_path / "png", names=["zero", "one", "two"])
    assert counts == {"train": {"one": 10, "two": 10, "zero": 10}, "test": {"one": 3, "two": 3, "zero": 3}}
    assert np.array_equal(np.asarray(Image.open(tmp_path / "png/train/one/00004.png")), images[4])
    out = run_cli("train", *fast_overrides(tmp_path, tmp_path / "png", **{"model.name": "lenet5"}), "--quiet")
    assert out.returncode == 0, out.stderr
    (raw / "bad-idx").write_bytes(b"\x01\x02")
    with pytest.raises(UsageError, match="no train-images"):
        convert_idx(tmp_path / "png", tmp_path / "png2")


def test_coco_boxes_become_crops_that_train(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    anns, images = [], []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 80, "height": 64})
        anns += [{"id": 10 * i, "image_id": i, "category_id": 1, "bbox": [5, 5, 30, 20], "iscrowd": 0},
                 {"id": 10 * i + 1, "image_id": i, "category_id": 2, "bbox": [40, 30, 24, 24], "iscrowd": 0},
                 {"id": 10 * i + 2, "image_id": i, "category_id": 2, "bbox": [0, 0, 4, 4], "iscrowd": 0},
                 {"id": 10 * i + 3, "image_id": i, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1}]
    images.append({"id": 99, "file_name": "missing.jpg"})
    anns.append({"id": 990, "image_id": 99, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0})
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "cat"}, {"id": 2, "name": "traffic/light"}]}))
    counts = convert_coco(tmp_path / "ann.json", tmp_path / "imgs", tmp_path / "crops")
    assert counts == {"cat": 8, "traffic_light": 8}
    assert Image.open(tmp_path / "crops/cat/0_0.jpg").size == (30, 20)
    out = run_cli("train", *fast_overrides(tmp_path, tmp_path / "crops", **{"data.img_size": 32}), "--quiet")
    assert out.returncode == 0, out.stderr


def test_a_named_dataset_is_checked_and_split_from_its_torchvision_files(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, (20, 28, 28))
    images[7] = images[3]  # one duplicate in train
    test_images = rng.integers(0, 256, (6, 28, 28))
    test_images[0] = images[5]  # and one train image in test
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", np.arange(20) % 2),
                        ("t10k-images-idx3-ubyte", test_images), ("t10k-labels-idx1-ubyte", np.arange(6) % 2)):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        (raw / name).write_bytes(header + array.astype(np.uint8).tobytes())
    report = check_data("mnist", root=str(tmp_path / "data"))
    assert report["kind"] == "named" and report["files"] == 26
    kinds = {(f["kind"], tuple(sorted(x["path"] for x in f["files"]))) for f in report["findings"] if "files" in f}
    assert kinds == {("duplicate", ("train/1 - one/00003.png", "train/1 - one/00007.png")),
                     ("leak", ("test/0 - zero/00000.png", "train/1 - one/00005.png"))}
    out = run_cli("data", "check", "mnist", "--root", str(tmp_path / "data"), "--quiet", "--plot",
                  str(tmp_path / "c.png"), "--fix", str(tmp_path / "q"))
    assert out.returncode == 2 and "copy it into a folder first" in out.stderr
    counts = split_dataset("mnist", tmp_path / "copy", val=0.5, test=0.0, root=str(tmp_path / "data"))
    assert counts["test"] == {"0 - zero": 3, "1 - one": 3} and sum(counts["val"].values()) == 10
    assert (tmp_path / "copy" / "test" / "0 - zero" / "00000.png").is_file()
