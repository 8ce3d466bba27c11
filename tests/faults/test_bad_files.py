"""Unsafe, truncated and damaged files: named in one line, never loaded unsafely, and caches rebuilt."""
import pickle

import pytest
import torch

from cnnmode import load_artifact, train
from cnnmode.config import resolve_config
from cnnmode.errors import RunError, UsageError
from cnnmode.files import torch_load
from tests.conftest import fast_overrides, run_cli, write_tree
from tests.faults.test_bad_values import small_run  # noqa: F401  (a shared fixture)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_foreign_pickle_is_refused_in_one_line_without_unsafe_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": "cnnmode-artifact", "payload": Payload()}, path)
    with pytest.raises(UsageError, match="is not a safe CNN Mode file"):
        torch_load(path)
    result = run_cli("predict", str(path), str(tmp_path))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "weights_only" not in result.stderr, result.stderr
    assert "this must never run" not in result.stdout


def test_a_pickle_of_another_protocol_gets_our_line_alone(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"format": "cnnmode-artifact", "weights": [1, 2]}, protocol=4))
    result = run_cli("predict", str(path), str(tmp_path), process=True)  # warnings print as they would
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "is not a safe CNN Mode file" in result.stderr and "protocol" not in result.stderr


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_a_truncated_file_is_named(tmp_path, keep):
    path = tmp_path / "last.pt"
    torch.save({"w": torch.randn(1000, 100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(RunError, match=f"{path} is truncated or damaged"):
        torch_load(path)


def test_a_truncated_image_cache_is_rebuilt(tmp_path, tiny_tree):
    cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree))
    train(cfg, quiet=True)
    [cache] = (tmp_path / "data" / "cache").glob("images-*.pt")
    cache.write_bytes(cache.read_bytes()[:1000])
    cfg.run.name = "again"
    run = train(cfg, quiet=True)
    assert "cannot be read" in (run / "train.log").read_text() and torch_load(cache)["classes"]


def test_nan_from_the_last_step_of_an_epoch_is_caught_before_any_checkpoint(tmp_path, tiny_tree):
    # one optimizer step per epoch: the loss of that epoch is finite, the weights after it are not
    for split in ("0.1", "0"):
        cfg = resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **{
            "optim.name": "sgd", "optim.lr": 1e30, "train.batch_size": 1000, "train.amp": "off",
            "train.ema": 0, "data.val_split": split, "run.name": f"nan{split}"}))
        with pytest.raises(RunError, match="became NaN/inf at epoch 1; no checkpoint was written"):
            train(cfg, quiet=True)
        run = tmp_path / "runs" / f"nan{split}"
        assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


def test_a_class_of_unreadable_files_is_refused(tmp_path):
    root = write_tree(tmp_path / "d", {"train": 6, "test": 2})
    for f in (root / "train" / "stripes").iterdir():
        f.write_bytes(b"not an image")
    with pytest.raises(UsageError, match="no readable training images: stripes"):
        train(resolve_config(overrides=fast_overrides(tmp_path, root)), quiet=True)


def test_one_image_per_class_is_refused_up_front(tmp_path):
    root = write_tree(tmp_path / "d", {"": 1})
    with pytest.raises(UsageError, match="every class needs at least 2 images"):
        train(resolve_config(overrides=fast_overrides(tmp_path, root)), quiet=True)
    assert not (tmp_path / "runs").exists()


def test_one_odd_image_does_not_set_the_resolution(tmp_path):
    root = write_tree(tmp_path / "d", {"train": 10, "test": 3})
    write_tree(tmp_path / "small", {"": 1}, size=8)
    (tmp_path / "small" / "circle" / "0000.png").rename(root / "train" / "circle" / "0000_first.png")
    (root / "train" / "circle" / "0000.png").rename(root / "train" / "circle" / "zzz.png")
    run = train(resolve_config(overrides=fast_overrides(tmp_path, root)), quiet=True)
    assert load_artifact(run).preprocess["img_size"] == 32
    assert "stored at 32 px: the most common size" in (run / "train.log").read_text()


def test_a_full_disk_is_named_in_one_line(tmp_path):
    import subprocess
    from cnnmode.files import atomic_torch_save, atomic_write_text
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with pytest.raises(RunError, match=f"no space left on {disk} while writing last.pt"):
            atomic_torch_save({"w": torch.randn(1024, 1024)}, disk / "last.pt")
        with pytest.raises(RunError, match="no space left on"):
            atomic_write_text(disk / "history.csv", "x" * 2**21)
        assert not list(disk.iterdir())  # no temp files left behind
    finally:
        import gc
        gc.collect()  # a failed torch.save may still hold its file open
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("change, message", [
    ({"img_size": -5}, "img_size -5 is not a side length"), ({"img_size": 100000}, "img_size 100000 is not"),
    ({"channels": 2}, "channels 2 is not 1 or 3"), ({"std": [0.2, 0.0, 0.2]}, "has a value of 0 or less"),
    ({"classes": ["circle", "square"]}, "its model has 3 outputs but it names 2 classes")])
def test_an_artifact_no_model_can_run_with_is_one_line_before_any_work(change, message, small_run, tiny_tree,
                                                                        tmp_path):  # noqa: F811
    blob = torch.load(small_run / "model.pt", weights_only=True)
    if "classes" in change:
        blob["classes"] = change["classes"]
    else:
        blob["preprocess"].update(change)
    torch.save(blob, tmp_path / "model.pt")
    image = next((tiny_tree / "test" / "circle").iterdir())
    result = run_cli("predict", str(tmp_path / "model.pt"), str(image))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    if change == {"img_size": 100000}:  # the server refuses it before listening, not at warm-up
        served = run_cli("serve", str(tmp_path / "model.pt"), "--port", "18765", "--threads", "1", process=True,
                         timeout=120)
        assert served.returncode == 2 and message in served.stderr and "serving" not in served.stdout, served
