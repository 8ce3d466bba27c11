"""The real console entry point, in a subprocess, on tiny generated data."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnmode import load_artifact
from tests.conftest import fast_overrides, run_cli

HISTORY = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "images_per_s"]


@pytest.fixture(scope="module")
def trained(tiny_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    result = run_cli("train", *fast_overrides(tmp, tiny_tree, **{"train.epochs": 2, "run.name": "r1"}))
    assert result.returncode == 0, result.stderr
    return tmp / "runs" / "r1", result


def test_train_prints_run_dir_last(trained):
    run, result = trained
    assert result.stdout.strip().splitlines()[-1] == f"run: {run}"
    assert "epoch 2/2" in result.stdout and "test accuracy" in result.stdout


def test_run_folder_has_every_file(trained):
    run, _ = trained
    for name in ("config.yaml", "history.csv", "metrics.json", "best.pt", "last.pt", "model.pt", "train.log",
                 "plots/training_curves.png", "plots/predictions.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp"))


def test_history_and_metrics_contents(trained):
    run, _ = trained
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 2 and list(rows[0])[:len(HISTORY)] == HISTORY and "peak_mem_mb" in rows[0]
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["images_per_s"]) > 0 for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "top5", "loss", "f1_macro", "ece"}
    assert 0 <= metrics["test"]["accuracy"] <= metrics["test"]["top5"] <= 1
    assert metrics["best_epoch"] in (1, 2) and metrics["train_time_s"] > 0
    assert metrics["environment"]["torch"].startswith("2.14") and metrics["seed"] == 0


def test_config_yaml_reruns_the_same_config(trained):
    run, _ = trained
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == "simplecnn" and saved["train"]["epochs"] == 2
    from cnnmode.config import resolve_config
    assert resolve_config(str(run / "config.yaml")).to_dict() == saved


def test_artifact_alone_predicts(trained):
    run, _ = trained
    art = load_artifact(run / "model.pt")
    assert art.classes == ["circle", "square", "stripes"]
    assert set(art.preprocess) >= {"img_size", "mean", "std", "channels"}
    import torch
    x = torch.randn(2, art.preprocess["channels"], 32, 32)
    assert art.model(x).shape == (2, 3)


@pytest.mark.parametrize("png", ["plots/training_curves.png", "plots/predictions.png"])
def test_plots_are_real_non_blank_pngs(trained, png):
    run, _ = trained
    img = np.asarray(Image.open(run / png).convert("L"), dtype=float)
    assert img.shape[0] > 200 and img.shape[1] > 400 and img.std() > 10


def test_train_log_records_epochs(trained):
    run, _ = trained
    log = (run / "train.log").read_text()
    assert "epoch 1/2" in log and "test accuracy" in log


def test_lists():
    recipes = run_cli("recipes")
    assert recipes.returncode == 0 and "cnnmode-resnet50" in recipes.stdout and "simplecnn-mnist" in recipes.stdout
    models = run_cli("models")
    assert models.returncode == 0 and all(m in models.stdout for m in ("resnet152", "lenet5", "fastnet"))


def test_console_script_installed():
    script = Path(sys.executable).parent / "cnnmode"
    assert script.exists() or shutil.which("cnnmode")


def test_help_lists_keys():
    result = run_cli("train", "--help")
    assert result.returncode == 0 and "optim.weight_decay" in result.stdout and "--resume" in result.stdout


@pytest.mark.parametrize("args, code, message", [
    (["--recipe", "nope"], 2, "unknown recipe 'nope'; choose one of:"),
    (["model.name=vgg"], 2, "unknown model 'vgg'; choose one of:"),
    (["optim.name=lion"], 2, "choose one of: sgd, adam, adamw, radam"),
    (["sched.name=poly"], 2, "choose one of: onecycle, cosine, step, plateau, constant"),
    (["train.batchsize=3"], 2, "unknown config key 'train.batchsize'"),
    (["train.epochs=ten"], 2, "train.epochs expects int"),
    (["data.path=/no/such/folder"], 2, "does not exist"),
    (["data.path="], 2, "data.path is empty"),
    (["--resume", "/tmp"], 2, "no last.pt"),
])
def test_bad_input_is_one_clean_line(tmp_path, args, code, message):
    result = run_cli("train", *args, f"data.root={tmp_path}", f"run.dir={tmp_path}")
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_runtime_error_exit_code_1(tmp_path, tiny_tree):
    result = run_cli("train", *fast_overrides(tmp_path, tiny_tree, **{"optim.lr": 1e30, "optim.name": "sgd",
                                                                        "train.amp": "off", "model.name": "lenet5"}))
    assert result.returncode == 1 and "NaN/inf" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_files_reported(tmp_path, tiny_tree):
    data = tmp_path / "data_copy"
    shutil.copytree(tiny_tree, data)
    (data / "train" / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "train" / "square" / "empty.jpg").write_bytes(b"")
    result = run_cli("train", *fast_overrides(tmp_path, data, **{"run.name": "c"}))
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unreadable or non-image file(s)" in result.stdout
    log = (tmp_path / "runs" / "c" / "train.log").read_text()
    assert "broken.png" in log and "empty.jpg" in log
    assert json.loads((tmp_path / "runs" / "c" / "metrics.json").read_text())["skipped_files"] == 2


def test_unforeseen_failure_is_one_line(tmp_path):
    not_an_artifact = tmp_path / "model.pt"
    not_an_artifact.write_bytes(b"this is not a torch file")
    result = run_cli("predict", str(not_an_artifact), str(tmp_path))
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "CNNMODE_DEBUG" in result.stderr


def test_a_reader_that_stops_early_ends_the_listing_quietly():
    """`cnnmode models | head -0`: the reader is gone before the first line; the command ends with exit 0 and
    nothing on stderr."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "cnnmode", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and stderr == "", stderr


def test_help_imports_no_torch():
    """`cnnmode --help` and every verb's parser are built without importing torch (seconds of imports)."""
    import subprocess

    code = ("import sys; from cnnmode.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
