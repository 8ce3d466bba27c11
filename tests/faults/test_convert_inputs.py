"""`data convert` and `data split` edge cases (#30 items 9, 11 and 13): float IDX pixels, class names that merge
or leave --out, COCO categories that would share a folder, COCO image paths outside --coco-images, and an archive
that names a member twice."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from cnnmode.data.tools import convert_coco, convert_idx
from cnnmode.errors import UsageError
from tests.conftest import run_cli


def write_idx(path, array: np.ndarray, code: int, dtype: str) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(dtype).tobytes()))


def idx_folder(tmp_path, images: np.ndarray, code: int = 0x0D, dtype: str = ">f4"):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte.gz", images, code, dtype)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(len(images)) % 5, 0x08, "u1")
    return raw


def test_float_idx_pixels_in_0_1_are_scaled_not_blanked(tmp_path):
    images = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    convert_idx(idx_folder(tmp_path, images), tmp_path / "png")
    saved = np.asarray(Image.open(tmp_path / "png/train/3/00003.png"))
    assert np.array_equal(saved, np.rint(images[3].astype(np.float64) * 255).astype(np.uint8)) and saved.max() > 200


def test_idx_values_outside_the_pixel_range_are_refused(tmp_path):
    with pytest.raises(UsageError, match="image values run from -3 to 900; expected 0-255"):
        convert_idx(idx_folder(tmp_path, np.full((5, 4, 4), 900.0) - np.eye(4) * 903), tmp_path / "png")


@pytest.mark.parametrize("names, message", [
    ("a,a,b,c,d", "a given more than once"),
    ("a,../../evilcls,b,c,d", "'../../evilcls' is not a plain class name"),
    ("a,.,b,c,d", "'.' is not a plain class name"),
])
def test_names_that_merge_classes_or_leave_the_output_are_refused(tmp_path, names, message):
    raw = idx_folder(tmp_path, np.zeros((10, 4, 4), np.uint8), 0x08, "u1")
    with pytest.raises(UsageError, match=message):
        convert_idx(raw, tmp_path / "out" / "png", names=names.split(","))
    assert not (tmp_path / "evilcls").exists() and not (tmp_path / "out").exists()


def coco(tmp_path, categories, file_name="0.jpg"):
    (tmp_path / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "imgs" / "0.jpg")
    (tmp_path / "secret.jpg").write_bytes((tmp_path / "imgs" / "0.jpg").read_bytes())
    anns = [{"id": i, "image_id": 0, "category_id": c["id"], "bbox": [0, 0, 20, 20], "iscrowd": 0}
            for i, c in enumerate(categories)]
    (tmp_path / "ann.json").write_text(json.dumps({"images": [{"id": 0, "file_name": file_name}],
                                                   "annotations": anns, "categories": categories}))
    return tmp_path / "ann.json"


def test_coco_categories_that_would_share_a_folder_are_refused(tmp_path):
    ann = coco(tmp_path, [{"id": 1, "name": ""}, {"id": 2, "name": "."}])
    with pytest.raises(UsageError, match="categories '' and '.' would share the folder '_'"):
        convert_coco(ann, tmp_path / "imgs", tmp_path / "crops")


@pytest.mark.parametrize("file_name", ["../secret.jpg", "SECRET_ABS", "sub\\..\\..\\secret.jpg"])
def test_coco_image_paths_outside_the_images_folder_are_refused(tmp_path, file_name):
    file_name = str(tmp_path / "secret.jpg") if file_name == "SECRET_ABS" else file_name
    ann = coco(tmp_path, [{"id": 1, "name": "cat"}], file_name)
    with pytest.raises(UsageError, match="leaves --coco-images"):
        convert_coco(ann, tmp_path / "imgs", tmp_path / "crops")
    assert not (tmp_path / "crops").exists()


def test_split_refuses_an_archive_that_names_a_member_twice(tmp_path):
    import io
    import tarfile

    from cnnmode.data.tools import split_dataset

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(buf, "PNG")
    with tarfile.open(tmp_path / "d.tar", "w") as tar:
        for name in ("a/1.png", "a/1.png", "a/2.png", "b/1.png", "b/2.png"):
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    with pytest.raises(UsageError, match=r"holds 1 member name\(s\) more than once \(e.g. a/1.png\)"):
        split_dataset(str(tmp_path / "d.tar"), tmp_path / "out", mode="copy")
    assert not (tmp_path / "out").exists()


def test_split_out_inside_the_source_is_refused_and_the_folder_gets_a_normal_mode(tiny_tree, tmp_path):
    """#30 item 24: --out inside the data folder; the finished folder was left mode 0700 by mkdtemp."""
    import os
    import shutil
    import stat

    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    r = run_cli("data", "split", str(data), "--out", str(data / "splits"))
    assert r.returncode == 2 and "inside the data folder" in r.stderr and not (data / "splits").exists()
    r = run_cli("data", "split", str(data), "--out", str(tmp_path / "s"), "--copy")
    assert r.returncode == 0, r.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o777 & ~umask
