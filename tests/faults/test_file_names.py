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
