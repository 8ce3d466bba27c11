"""`data check` finds exactly the planted problems; `--fix` moves exactly the files it should and `restore`
puts them back."""
from __future__ import annotations

import hashlib
import json

import pytest

from cnnmode.data.tools import CheckOptions, check_data, quarantine, restore
from cnnmode.errors import RunError, UsageError
from tests.conftest import run_cli
from tests.data.tools.conftest import as_keys, clean_tree


def tree_digest(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_finds_exactly_the_planted_problems(planted):
    root, expected = planted
    report = check_data(str(root))
    assert as_keys(report) == expected
    assert report["counts"]["train"] == {"a": 41, "b": 14, "c": 3}  # usable images only
    assert not report["clean"]


def test_a_clean_set_is_clean(tmp_path):
    root = clean_tree(tmp_path / "ok", {"train": {"a": 6, "b": 6}, "test": {"a": 2, "b": 2}})
    report = check_data(str(root))
    assert report["clean"] and report["findings"] == [] and report["to_move"] == []


def test_exact_only_and_min_size_options(planted):
    root, expected = planted
    report = check_data(str(root), CheckOptions(near=-1, min_size=4, max_imbalance=100))
    assert as_keys(report) == expected - {("duplicate", "train/b/img1.png|train/b/near.jpg"),
                                          ("too_small", "train/b/tiny.png"), ("imbalance", "train:a/c")}


def test_fix_moves_exactly_the_dropped_files_and_restore_undoes_it(planted, tmp_path):
    root, _ = planted
    before = tree_digest(root)
    report = check_data(str(root))
    moved = {m["path"] for m in report["to_move"]}
    assert moved == {"train/a/empty.png", "train/a/trunc.jpg", "train/b/notimage.png", "train/b/tiny.png",
                     "train/a/img0.png", "train/b/near.jpg", "train/a/img2.png"}  # leak: the test copy stays
    count, manifest = quarantine(report, root, tmp_path / "q")
    assert count == len(moved)
    after = tree_digest(root)
    assert set(before) - set(after) == moved
    assert {m["path"] for m in json.loads(manifest.read_text())["moved"]} == moved
    assert set(tree_digest(tmp_path / "q")) == moved | {"manifest.json"}
    assert as_keys(check_data(str(root))) >= {("unusual_mode", "train/c/cmyk.jpg")}
    assert not {k for k, _ in as_keys(check_data(str(root)))} & {"duplicate", "leak", "empty", "truncated"}
    n, back_to = restore(tmp_path / "q")
    assert n == len(moved) and back_to == root.resolve()
    assert tree_digest(root) == before
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


def test_archive_is_checked_in_place(planted, tmp_path):
    import tarfile

    root, expected = planted
    with tarfile.open(tmp_path / "ds.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="ds")
    report = check_data(str(tmp_path / "ds.tar.gz"))
    assert as_keys(report) == {(k, "|".join(f"ds/{p}" for p in v.split("|")) if k not in
                                ("missing_class", "imbalance", "layout") else v) for k, v in expected} - \
        {("layout", "stray:notes.txt"), ("layout", "not_image_suffix:train/a/readme.txt")} | \
        {("layout", "stray:ds/notes.txt"), ("layout", "not_image_suffix:ds/train/a/readme.txt")}


def test_cli_exit_codes_json_and_picture(planted, tmp_path):
    root, expected = planted
    out = run_cli("data", "check", str(root), "--json", str(tmp_path / "r.json"), "--quiet")
    assert out.returncode == 1, out.stderr
    assert "leak" in out.stdout and "would move 7 files" in out.stdout
    assert as_keys(json.loads((tmp_path / "r.json").read_text())) == expected
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    clean = clean_tree(tmp_path / "ok", {"train": {"a": 3, "b": 3}})
    ok = run_cli("data", "check", str(clean), "--quiet", "--plot", str(tmp_path / "c.png"))
    assert ok.returncode == 0 and "no problems found" in ok.stdout
    bad = run_cli("data", "check", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def test_cli_fix_and_restore(planted, tmp_path):
    root, _ = planted
    before = tree_digest(root)
    out = run_cli("data", "check", str(root), "--quiet", "--fix", str(tmp_path / "q"), "--plot",
                  str(tmp_path / "c.png"))
    assert out.returncode == 1 and "moved 7 files" in out.stdout
    assert len(tree_digest(root)) == len(before) - 7
    back = run_cli("data", "restore", str(tmp_path / "q"))
    assert back.returncode == 0 and "restored 7 files" in back.stdout
    assert tree_digest(root) == before
    again = run_cli("data", "restore", str(tmp_path / "q"))
    assert again.returncode == 2 and "manifest.json" in again.stderr


def test_layout_problems_are_named_with_their_fix(tmp_path):
    root = clean_tree(tmp_path / "ds", {"train": {"a": 3, "b": 3}, "validation": {"a": 1, "b": 1}})
    clean_tree(tmp_path / "extra", {"sub": {"x": 2}})
    (root / "train/a/sub").mkdir()
    (tmp_path / "extra/sub/x/img0.png").rename(root / "train/a/sub/deep.png")
    (root / "train/loose.png").write_bytes((root / "train/a/img0.png").read_bytes())
    report = check_data(str(root), CheckOptions(near=-1))
    layout = {f["layout"]: f for f in report["findings"] if f["kind"] == "layout"}
    assert set(layout) == {"alias", "nested", "stray"}
    assert layout["alias"]["paths"] == ["validation/ → val/"] and "rename" in layout["alias"]["fix"]
    assert layout["nested"]["paths"] == ["train/a/sub/"]
    assert layout["stray"]["paths"] == ["train/loose.png"]
    assert report["counts"]["val"] == {"a": 1, "b": 1}  # the aliased split is still checked


def test_class_folders_differing_only_in_case_are_flagged(tmp_path):
    root = clean_tree(tmp_path / "ds", {"train": {"Cat": 2, "cat": 2, "dog": 2}, "test": {"Cat": 1, "dog": 1}})
    layout = [f for f in check_data(str(root), CheckOptions(near=-1))["findings"] if f["kind"] == "layout"]
    assert [f["layout"] for f in layout] == ["case_clash"]
    assert layout[0]["paths"] == ["train/Cat/", "train/cat/"] and "Windows" in layout[0]["problem"]


def _damaged(data: bytes, how: str) -> bytes:
    if how == "cut":
        return data[:len(data) // 2]
    if how == "cut_last_chunk":
        return data[:-6]
    out = bytearray(data)
    idat = out.find(b"IDAT")
    if how == "bad_crc":  # the pixels intact, the chunk's checksum wrong
        out[idat + 4 + int.from_bytes(out[idat - 4:idat], "big")] ^= 0xFF
    else:  # "flipped": a byte of the compressed pixels changed
        out[idat + 10] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("suffix, how, kind", [
    (".jpg", "cut", "truncated"), (".png", "cut", "truncated"), (".png", "cut_last_chunk", "truncated"),
    (".png", "bad_crc", "unreadable"), (".png", "flipped", "unreadable")])
def test_a_file_cut_short_is_truncated_and_one_changed_in_place_is_unreadable(tmp_path, suffix, how, kind):
    import io

    import numpy as np
    from PIL import Image

    root = clean_tree(tmp_path / "ds", {"train": {"a": 2, "b": 2}})
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(
        buf, "JPEG" if suffix == ".jpg" else "PNG")
    (root / "train/a" / f"bad{suffix}").write_bytes(_damaged(buf.getvalue(), how))
    found = [(f["kind"], f["path"]) for f in check_data(str(root), CheckOptions(near=-1))["findings"]]
    assert found == [(kind, f"train/a/bad{suffix}")]


def test_a_manifest_cannot_move_files_outside_its_folders(planted, tmp_path):
    root, _ = planted
    count, manifest = quarantine(check_data(str(root)), root, tmp_path / "q")
    data = json.loads(manifest.read_text())
    data["moved"].append({"path": "../../outside.txt", "reason": "planted"})
    manifest.write_text(json.dumps(data))
    with pytest.raises(RunError, match="unsafe path"):
        restore(tmp_path / "q")
    with pytest.raises(UsageError, match="outside the data folder"):
        quarantine(check_data(str(root)), root, root.parent)  # a quarantine folder holding the data


def test_fix_never_moves_every_copy(tmp_path):
    root = clean_tree(tmp_path / "ds", {"train": {"a": 4, "b": 4}})
    from PIL import Image

    Image.open(root / "train/a/img1.png").resize((8, 8)).save(root / "train/a/img0.png")  # too small, and a copy
    report = check_data(str(root), CheckOptions(near=8))
    moves = {m["path"] for m in report["to_move"]}
    groups = [sorted(x["path"] for x in f["files"]) for f in report["findings"] if f["kind"] == "duplicate"]
    assert ["train/a/img0.png", "train/a/img1.png"] in groups  # the group would keep img0, which is too small
    assert "train/a/img0.png" in moves and "train/a/img1.png" not in moves


@pytest.mark.parametrize("after_move", [False, True])
def test_a_fix_killed_at_any_point_restores_byte_exact(planted, tmp_path, monkeypatch, after_move):
    """#30 item 8: stop the fix at every file, before and after its move (what kill -9 leaves), and restore."""
    import shutil

    from cnnmode.data.tools import quarantine_files

    root, _ = planted
    before = tree_digest(root)
    report = check_data(str(root))
    real_move = quarantine_files._move
    for stop in range(len(report["to_move"])):
        data, q = tmp_path / f"d{stop}{after_move}", tmp_path / f"q{stop}{after_move}"
        shutil.copytree(root, data)
        calls = []

        def dying_move(src, dst):
            calls.append(src)
            if len(calls) - 1 == stop:
                if after_move:
                    real_move(src, dst)
                raise KeyboardInterrupt  # the process ends here
            real_move(src, dst)

        monkeypatch.setattr(quarantine_files, "_move", dying_move)
        with pytest.raises(KeyboardInterrupt):
            quarantine(report, data, q)
        monkeypatch.setattr(quarantine_files, "_move", real_move)
        restore(q)
        assert tree_digest(data) == before, stop


def test_a_copy_left_by_a_killed_cross_device_move_is_dropped_on_restore(planted, tmp_path):
    import shutil

    root, _ = planted
    before = tree_digest(root)
    count, manifest = quarantine(check_data(str(root)), root, tmp_path / "q")
    first = json.loads(manifest.read_text())["moved"][0]["path"]
    shutil.copy2(tmp_path / "q" / first, root / first)  # the copy made, the original never deleted
    restore(tmp_path / "q")
    assert tree_digest(root) == before


def test_a_check_that_cannot_finish_exits_3_not_1(planted, tmp_path):
    """#30 item 21: "problems found" (1) and "could not check" differ, so a script can tell them apart."""
    import tarfile

    root, _ = planted
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="data")
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])  # cut off part-way
    r = run_cli("data", "check", str(archive), "--plot", str(tmp_path / "c.png"), "--quiet")
    assert r.returncode == 3, (r.returncode, r.stdout[-500:], r.stderr)
    assert r.stderr.startswith("error: could not check") and len(r.stderr.strip().splitlines()) == 1
    assert run_cli("data", "check", str(root), "--plot", str(tmp_path / "p.png"), "--quiet").returncode == 1
