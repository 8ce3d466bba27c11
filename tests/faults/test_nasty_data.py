"""Damaged archives are errors naming them (never a silently smaller dataset); damage confined to members, oversized
members and every kind of file that is not a readable image are skipped and counted; nothing hangs."""
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnmode import load_artifact, train
from cnnmode.config import resolve_config
from cnnmode.errors import RunError
from tests.conftest import fast_overrides, run_cli, write_tree


def _train(tmp_path, data, **extra):
    return train(resolve_config(overrides=fast_overrides(tmp_path, data, **extra)), quiet=True)


def _skipped(run) -> int:
    return json.loads((run / "metrics.json").read_text())["skipped_files"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("nasty") / "shapes", {"train": 12, "test": 4})


def _tar_gz(tree: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname="shapes")
    return path


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_flipped_bytes_in_a_tar_gz_are_an_error_naming_it(tree, tmp_path, where):
    path = _tar_gz(tree, tmp_path / "bad.tar.gz")
    data = bytearray(path.read_bytes())
    at = int(len(data) * where)
    data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match=f"archive {path} is damaged"):
        _train(tmp_path, path)
    assert not (tmp_path / "runs").exists()


def test_a_truncated_tar_gz_is_an_error(tree, tmp_path):
    path = _tar_gz(tree, tmp_path / "cut.tar.gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(RunError, match="is damaged"):
        _train(tmp_path, path)


def test_a_zip_member_failing_its_crc_is_skipped_and_counted(tree, tmp_path):
    path = tmp_path / "crc.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(tree.rglob("*.png")):
            z.write(f, f.relative_to(tree.parent).as_posix())
    data = bytearray(path.read_bytes())
    target = b"shapes/train/square/0005.png"
    at = data.index(target) + len(target) + 200  # inside that member's stored bytes
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    run = _train(tmp_path, path)
    assert _skipped(run) == 1 and "damaged in the archive" in (run / "train.log").read_text()


def test_a_zip_bomb_reads_only_images_within_the_limits(tree, tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(tree.rglob("*.png")):
            z.write(f, f.relative_to(tree.parent).as_posix())
        z.writestr("shapes/junk.bin", bytes(200 * 2**20))  # never read: not an image in a class folder
        z.writestr("shapes/train/circle/huge.png", bytes(80 * 2**20))  # an "image" over the limit
    assert path.stat().st_size < 2**20
    run = _train(tmp_path, path, **{"data.max_file_mb": 50})
    assert _skipped(run) == 1 and "larger than data.max_file_mb" in (run / "train.log").read_text()
    with pytest.raises(RunError, match="more than data.max_total_gb"):
        _train(tmp_path, path, **{"data.max_file_mb": 100, "data.max_total_gb": 0.05, "data.root": tmp_path / "r2"})


def _png_bomb() -> bytes:
    """A 20000 x 20000 PNG of a few hundred bytes: only its header is real (what a decompression bomb looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(2500)))
            + chunk(b"IEND", b""))


def _nasty_folder(root: Path, size: int) -> Path:
    """A class-folder tree with one of each kind of trouble in train/ (10 unreadable, 5 odd but readable)."""
    write_tree(root, {"train": 8, "test": 3}, size=size)
    bad = root / "train" / "circle"
    rng = np.random.default_rng(0)
    (bad / "empty.png").write_bytes(b"")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(png, "PNG")
    (bad / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    jpg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(jpg, "JPEG")
    (bad / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    (bad / "text.jpg").write_text("this is not a jpeg")
    os.symlink(root / "no-such-file.png", bad / "broken.png")
    os.symlink(bad / "loop_b.png", bad / "loop_a.png")
    os.symlink(bad / "loop_a.png", bad / "loop_b.png")
    os.mkfifo(bad / "fifo.png")
    os.symlink("/dev/zero", bad / "zero.png")
    (bad / "bomb.png").write_bytes(_png_bomb())
    odd = root / "train" / "square"
    Image.new("CMYK", (size, size), (0, 0, 0, 0)).save(odd / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (size, size))).astype(np.uint16)).save(odd / "deep16.png")
    Image.new("P", (size, size)).save(odd / "palette.png", transparency=0)
    Image.new("RGB", (size * 3 // 4, size * 3 // 4), (9, 9, 9)).save(odd / "smaller.png")  # mixed sizes
    os.rename(os.fsencode(odd / "0000.png"), os.path.join(os.fsencode(odd), b"caf\xe9.png"))
    return root


@pytest.mark.parametrize("size", [32, 80], ids=["in-memory", "streamed"])
def test_a_nasty_folder_trains_with_exact_skip_counts(tmp_path, size):
    root = _nasty_folder(tmp_path / "nasty", size)
    result = run_cli("train", *fast_overrides(tmp_path, root, **{"data.workers": 0, "train.batch_size": 8,
                                                                 "run.name": "nasty"}))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "nasty"
    assert _skipped(run) == 10
    assert load_artifact(run).preprocess["img_size"] == (size if size <= 64 else 224)  # streamed: data.img_size=0
    log = (run / "train.log").read_text()
    for name in ("empty.png", "truncated.png", "truncated.jpg", "text.jpg", "broken.png", "loop_a.png", "loop_b.png",
                 "fifo.png", "zero.png", "bomb.png"):
        assert f"circle/{name}: " in log, name
    assert not any(f"{name}: " in log for name in ("cmyk.jpg", "deep16.png", "palette.png", "smaller.png"))
