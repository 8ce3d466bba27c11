import io
import tarfile
import zipfile

import pytest
import torch
from PIL import Image

from cnnmode.config import resolve_config
from cnnmode.data import build_data
from cnnmode.errors import RunError, UsageError
from tests.conftest import CLASSES, write_tree

CPU = torch.device("cpu")


def data_for(tmp_path, path, *overrides):
    cfg = resolve_config(overrides=[f"data.path={path}", f"data.root={tmp_path / 'root'}", *overrides])
    return build_data(cfg, CPU)


def test_tree_with_train_and_test(tiny_tree, tmp_path):
    data = data_for(tmp_path, tiny_tree, "data.val_split=0.2")
    assert data.classes == sorted(CLASSES)
    assert data.sizes() == {"train": 72, "val": 18, "test": 30}
    assert data.channels == 3 and data.img_size == 32
    x, y = next(iter(data.test))
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.long


def test_normalisation_from_training_split(tiny_tree, tmp_path):
    data = data_for(tmp_path, tiny_tree, "data.val_split=0")
    images = data.train.images.double() / 255
    assert data.mean == pytest.approx(images.mean((0, 2, 3)).tolist(), abs=1e-5)
    assert data.std == pytest.approx(images.std((0, 2, 3)).tolist(), abs=1e-3)


def test_stratified_validation_and_subset(tiny_tree, tmp_path):
    data = data_for(tmp_path, tiny_tree, "data.val_split=0.2", "data.subset=0.5")
    for split in ("train", "val", "test"):
        counts = torch.bincount(getattr(data, split).labels, minlength=3)
        assert counts.min() == counts.max() > 0, split


def test_flat_class_folders_get_carved_test_split(tmp_path):
    root = write_tree(tmp_path / "flat", {"": 20})
    data = data_for(tmp_path, root, "data.test_split=0.25", "data.val_split=0.2")
    assert data.sizes() == {"train": 36, "val": 9, "test": 15}


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_archive_with_top_folder(tiny_tree, tmp_path, fmt):
    path = tmp_path / f"shapes.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as z:
            for f in tiny_tree.rglob("*.png"):
                z.write(f, "shapes/" + f.relative_to(tiny_tree).as_posix())
    else:
        with tarfile.open(path, "w:gz") as t:
            t.add(tiny_tree, arcname="shapes")
    data = data_for(tmp_path, path)
    assert data.classes == sorted(CLASSES) and data.sizes()["test"] == 30
    assert len(list((tmp_path / "root" / "cache").glob("images-*.pt"))) == 1


def test_cache_is_reused_and_keyed_by_content(tiny_tree, tmp_path):
    data_for(tmp_path, tiny_tree)
    cache = list((tmp_path / "root" / "cache").glob("images-*.pt"))
    assert len(cache) == 1
    before = cache[0].stat().st_mtime_ns
    again = data_for(tmp_path, tiny_tree)
    assert cache[0].stat().st_mtime_ns == before and again.sizes()["test"] == 30


def test_unsafe_archive_member_is_refused(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as t:
        blob = io.BytesIO()
        Image.new("RGB", (8, 8)).save(blob, "PNG")
        for name in ("a/x.png", "b/y.png", "../escape.png"):
            info = tarfile.TarInfo(name)
            info.size = len(blob.getvalue())
            t.addfile(info, io.BytesIO(blob.getvalue()))
    with pytest.raises(RunError, match="absolute or parent path"):
        data_for(tmp_path, path)
    assert not (tmp_path / "escape.png").exists()


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    root = write_tree(tmp_path / "bad", {"train": 10, "test": 4})
    (root / "train" / "circle" / "zero.png").write_bytes(b"")
    (root / "train" / "square" / "trunc.jpg").write_bytes((root / "train" / "square" / "0000.png").read_bytes()[:40])
    (root / "train" / "stripes" / "garbage.png").write_bytes(b"not an image at all")
    (root / "test" / "circle" / "notes.txt").write_text("hello")
    data = data_for(tmp_path, root, "data.val_split=0")
    reasons = dict(data.skipped)
    assert len(data.skipped) == 4
    assert reasons["train/circle/zero.png"] == "empty file"
    assert reasons["test/circle/notes.txt"] == "not an image file"
    assert reasons["train/stripes/garbage.png"].startswith("cannot decode")
    assert data.sizes()["train"] == 30


def test_grayscale_and_rgba_inputs(tmp_path):
    gray = write_tree(tmp_path / "gray", {"train": 6, "test": 2}, size=28, mode="L")
    data = data_for(tmp_path, gray, "data.val_split=0")
    assert data.channels == 1 and data.train.images.shape[1:] == (1, 28, 28)
    as_rgb = data_for(tmp_path, gray, "data.val_split=0", "data.channels=3")
    assert as_rgb.channels == 3 and next(iter(as_rgb.test))[0].shape[1] == 3
    rgba = write_tree(tmp_path / "rgba", {"train": 6, "test": 2}, mode="RGBA")
    assert data_for(tmp_path, rgba, "data.val_split=0").channels == 3


def test_large_images_stream_from_disk(tmp_path):
    root = write_tree(tmp_path / "big", {"train": 6, "test": 2}, size=96)
    data = data_for(tmp_path, root, "data.val_split=0", "data.img_size=64", "data.workers=0")
    assert data.train.__class__.__name__ == "StreamLoader"
    x, y = next(iter(data.train))
    assert x.shape[1:] == (3, 64, 64) and len(y) == len(x)


@pytest.mark.parametrize("setup, error, message", [
    (lambda p: p / "missing", UsageError, "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", UsageError, "empty folder"),
    (lambda p: write_tree(p / "one", {"train": 3}) and _keep_one(p / "one"), UsageError, "need at least 2"),
    (lambda p: _with_empty_class(write_tree(p / "hole", {"train": 3})), UsageError, "no images: zebra"),
    (lambda p: (p / "x.txt").write_text("a") and p / "x.txt", UsageError, "not an archive"),
])
def test_bad_data_paths(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        data_for(tmp_path, setup(tmp_path))


def _keep_one(root):
    import shutil
    for c in CLASSES[1:]:
        shutil.rmtree(root / "train" / c)
    return root


def _with_empty_class(root):
    (root / "train" / "zebra").mkdir()
    return root


def test_named_dataset_offline_gives_clear_error(tmp_path):
    with pytest.raises(RunError, match="could not load or download cifar10"):
        data_for(tmp_path, "cifar10")
