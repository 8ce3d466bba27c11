"""File names that are not UTF-8 (Latin-1 bytes from an old camera or archive) are shown as escapes, never a crash
after the work is done."""
import csv
import os
import shutil

import pytest

from tests.conftest import run_cli
from tests.faults.test_bad_values import small_run  # noqa: F401  (a shared fixture)


@pytest.fixture
def latin1_image(tiny_tree, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = next((tiny_tree / "test" / "circle").iterdir())
    target = os.path.join(os.fsencode(folder), b"caf\xe9.png")  # not valid UTF-8
    shutil.copyfile(src, target)
    return folder


def test_predict_writes_csv_for_non_utf8_names(small_run, latin1_image, tmp_path):  # noqa: F811
    out = tmp_path / "p.csv"
    result = run_cli("predict", str(small_run), str(latin1_image), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["file"].endswith("caf\\udce9.png")


def test_explain_draws_non_utf8_names(small_run, latin1_image, tmp_path):  # noqa: F811
    result = run_cli("explain", str(small_run), str(latin1_image), "--features", "0", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "o").glob("features_*.png"))) == 1 and list((tmp_path / "o").glob("gradcam_*.png"))


@pytest.fixture
def latin1_tree(tiny_tree, tmp_path):
    """The shapes tree with one image copied under a Latin-1 name in train and in test (a leak) and once more
    in train under another class (a duplicate)."""
    root = tmp_path / "tree"
    shutil.copytree(tiny_tree, root)
    src = next((tiny_tree / "test" / "circle").iterdir())
    for where in (b"train/circle/caf\xe9.png", b"test/circle/caf\xe9.png", b"train/square/d\xfcp.png"):
        shutil.copyfile(src, os.path.join(os.fsencode(root), where))
    return root


def test_data_check_draws_duplicate_groups_with_non_utf8_names(latin1_tree, tmp_path):
    """#30 item 15: the duplicates picture named its files with matplotlib, which refuses surrogate escapes."""
    result = run_cli("data", "check", str(latin1_tree), "--quiet", "--plot", str(tmp_path / "c.png"),
                     "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stderr  # problems found (the leak), not a crash
    assert (tmp_path / "c_duplicates.png").stat().st_size > 5000 and "caf\\udce9" in (tmp_path / "r.json").read_text()


def test_split_csv_and_embed_parquet_keep_non_utf8_names(latin1_tree, small_run, tmp_path):  # noqa: F811
    """#30 item 16: the index lists the file's own bytes (training reads it back); Parquet gets escapes."""
    from cnnmode.data import csvlist

    result = run_cli("data", "split", str(latin1_tree), "--out", str(tmp_path / "s"), "--csv")
    assert result.returncode == 0, result.stderr
    assert b"caf\xe9.png" in (tmp_path / "s" / "index.csv").read_bytes()
    _, rows = csvlist.read_rows(str(tmp_path / "s" / "index.csv"))
    assert any(os.path.exists(r[0]) and r[0].endswith("caf\udce9.png") for r in rows)  # the very file
    out = tmp_path / "e.parquet"
    result = run_cli("embed", str(small_run), str(latin1_tree / "train" / "circle"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    import pyarrow.parquet as pq

    assert any(p.endswith("caf\\udce9.png") for p in pq.read_table(out).column("path").to_pylist())
