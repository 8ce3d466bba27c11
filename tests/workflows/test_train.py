import pytest
import torch

from cnnmode import load_artifact, train
from cnnmode.config import resolve_config
from cnnmode.errors import RunError, UsageError
from tests.conftest import fast_overrides


def _cfg(tmp_path, tiny_tree, **extra):
    return resolve_config(overrides=fast_overrides(tmp_path, tiny_tree, **extra))


def _weights(run):
    return torch.load(run / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_resume_is_bitwise_identical(tmp_path, tiny_tree, optimizer):
    # dropout (simplecnn), AutoAugment, EMA, a per-step onecycle schedule and Muon's momentum depend on restored state
    extra = {"train.epochs": 2, "train.deterministic": True, "sched.name": "onecycle", "aug.autoaugment": True,
             "train.ema": 0.9, "optim.name": optimizer}
    full = train(_cfg(tmp_path, tiny_tree, **extra, **{"run.name": "full"}), quiet=True)
    part = train(_cfg(tmp_path, tiny_tree, **extra, **{"run.name": "part"}), quiet=True, stop_after_epochs=1)
    assert torch.load(part / "last.pt", weights_only=True)["state"]["epoch"] == 1
    assert not (part / "metrics.json").exists()
    train(resume=part, quiet=True)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (part / "history.csv").read_text().count("\n") == 3


def test_resume_refuses_to_stretch_onecycle(tmp_path, tiny_tree):
    run = train(_cfg(tmp_path, tiny_tree, **{"sched.name": "onecycle"}), quiet=True)
    with pytest.raises(UsageError, match="cannot be stretched"):
        train(resume=run, overrides=["train.epochs=3"], quiet=True)
    with pytest.raises(UsageError, match="only train.epochs can change"):
        train(resume=run, overrides=["optim.lr=0.1"], quiet=True)


def test_resume_extends_a_step_schedule(tmp_path, tiny_tree):
    run = train(_cfg(tmp_path, tiny_tree, **{"sched.name": "step"}), quiet=True)
    train(resume=run, overrides=["train.epochs=2"], quiet=True)
    import json
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


def test_stale_temp_file_is_ignored(tmp_path, tiny_tree):
    run = train(_cfg(tmp_path, tiny_tree, **{"train.epochs": 2, "sched.name": "step"}), quiet=True,
                stop_after_epochs=1)
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    train(resume=run, quiet=True)
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 2


@pytest.mark.parametrize("bad, error", [({"data.path": "no/such/folder"}, UsageError),
                                        ({"run.device": "cuda:7"}, UsageError)])
def test_a_failed_start_leaves_no_run_folder(tmp_path, tiny_tree, bad, error):
    if bad.get("run.device") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(error):
        train(_cfg(tmp_path, tiny_tree, **bad), quiet=True)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_train_log_starts_before_the_folder_exists(tmp_path, tiny_tree):
    run = train(_cfg(tmp_path, tiny_tree), quiet=True)
    log = (run / "train.log").read_text().splitlines()
    assert f"run {run}" in log[0] and any("data " in line and "3 classes" in line for line in log[:4])


def test_resume_finishes_a_run_whose_training_is_complete(tmp_path, tiny_tree):
    # killed after its last epoch but before the test evaluation, artifact and report: --resume finishes it
    run = train(_cfg(tmp_path, tiny_tree, **{"train.epochs": 2, "sched.name": "step"}), quiet=True,
                stop_after_epochs=2)
    assert not (run / "model.pt").exists()
    train(resume=run, quiet=True)
    assert (run / "model.pt").exists() and (run / "report.html").exists()
    assert (run / "history.csv").read_text().count("\n") == 3  # no epoch trained again


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="no last.pt"):
        train(resume=tmp_path, quiet=True)


def test_diverging_loss_stops_with_clear_message(tmp_path, tiny_tree):
    cfg = _cfg(tmp_path, tiny_tree, **{"optim.name": "sgd", "optim.lr": 1e30, "train.amp": "off",
                                       "model.name": "lenet5"})
    with pytest.raises(RunError, match="NaN/inf at epoch 1"):
        train(cfg, quiet=True)


def test_pretrained_head_replaced_and_backbone_frozen(tmp_path, tiny_tree):
    src = train(_cfg(tmp_path, tiny_tree, **{"run.name": "src"}), quiet=True)
    art = load_artifact(src)
    assert art.classes == ["circle", "square", "stripes"] and art.preprocess["img_size"] == 32
    from cnnmode.engine.setup import load_pretrained
    from cnnmode.models import build_model
    model = build_model("simplecnn", num_classes=5, in_channels=3)
    load_pretrained(model, str(src / "model.pt"))
    assert torch.equal(model[0][0].weight, art.model[0][0].weight)  # backbone copied
    assert model[-1].weight.shape == (5, 128)  # head re-initialised for 5 classes
    frozen = train(_cfg(tmp_path, tiny_tree, **{"run.name": "frozen", "model.pretrained": src / "model.pt",
                                                "model.freeze": "backbone"}), quiet=True)
    after = load_artifact(frozen).model
    assert torch.equal(after[0][0].weight, art.model[0][0].weight)  # frozen backbone unchanged
    assert not torch.equal(after[-1].weight, art.model[-1].weight)  # head trained


def test_two_stage_finetune_unfreezes_backbone(tmp_path, tiny_tree):
    src = train(_cfg(tmp_path, tiny_tree, **{"run.name": "base"}), quiet=True)
    first = load_artifact(src).model[0][0].weight.clone()
    cfg = _cfg(tmp_path, tiny_tree, **{"run.name": "ft", "model.pretrained": src, "model.freeze": "backbone",
                                       "train.unfreeze_at": 1, "train.epochs": 2, "sched.name": "step"})
    run = train(cfg, quiet=True, stop_after_epochs=1)
    assert torch.equal(torch.load(run / "last.pt", weights_only=True)["model"]["0.0.weight"], first)  # stage 1
    train(resume=run, quiet=True)
    assert not torch.equal(_weights(run)["0.0.weight"], first)  # stage 2 trains the backbone
    assert "stage 2: all layers train from epoch 2" in (run / "train.log").read_text()
    lrs = [line.split(",")[1] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert float(lrs[1]) == pytest.approx(float(lrs[0]) * 0.1)


def test_unfreeze_needs_a_compatible_schedule(tmp_path, tiny_tree):
    with pytest.raises(UsageError, match="train.unfreeze_at works with sched.name step"):
        _cfg(tmp_path, tiny_tree, **{"model.freeze": "backbone", "train.unfreeze_at": 1, "sched.name": "onecycle"})


@pytest.mark.parametrize("model", ["simplecnn", "resnet18"])
def test_quantization_aware_training(tmp_path, tiny_tree, model):
    import json
    run = train(_cfg(tmp_path, tiny_tree, **{"model.name": model, "train.qat": True, "train.epochs": 2,
                                             "run.name": model}), quiet=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["qat"]["backend"] == "x86" and 0 <= metrics["qat"]["int8_accuracy"] <= 1
    assert abs(metrics["qat"]["int8_accuracy"] - metrics["test"]["accuracy"]) <= 0.15
    int8 = torch.jit.load(metrics["qat"]["file"])
    assert int8(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    art = load_artifact(run)  # the float weights load into the plain registry model
    assert art.model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_qat_refuses_models_without_int8_kernels(tmp_path, tiny_tree):
    with pytest.raises(UsageError, match="train.qat=true supports resnet18"):
        _cfg(tmp_path, tiny_tree, **{"model.name": "fastnet", "train.qat": True})


def test_profile_writes_trace_and_top_ops(tmp_path, tiny_tree):
    import json
    run = train(_cfg(tmp_path, tiny_tree, **{"train.profile": True, "run.name": "prof"}), quiet=True)
    trace = json.loads((run / "profile_trace.json").read_text())
    assert trace["traceEvents"] and "convolution" in (run / "profile_top_ops.txt").read_text()
    assert "top operators" in (run / "train.log").read_text()


def test_speed_tricks_train_fastnet_and_no_val_split_keeps_last_epoch(tmp_path, tiny_tree):
    # the speed recipe's keys on tiny data: Muon, progressive resizing, alternating flips, bias LR, shift TTA
    extra = {"model.name": "fastnet", "optim.name": "muon", "optim.lr": 0.1, "optim.bias_lr_scale": 8,
             "train.epochs": 3, "train.progressive_size": 16, "aug.alternate_flip": True, "train.tta": True,
             "train.tta_translate": 1, "train.target_accuracy": 0.01, "data.val_split": 0}
    run = train(_cfg(tmp_path, tiny_tree, **extra), quiet=True)
    metrics = __import__("json").loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 3 and metrics["val"] is None  # no selection on the test split
    assert metrics["time_to_target_s"] is not None and 0 <= metrics["test"]["accuracy"] <= 1


def test_freeze_stem_after_stops_the_stem_and_survives_resume(tmp_path, tiny_tree):
    extra = {"model.name": "fastnet", "train.epochs": 2, "train.freeze_stem_after": 1, "optim.bias_lr_scale": 8}
    run = train(_cfg(tmp_path, tiny_tree, **extra), quiet=True, stop_after_epochs=1)
    after_one = _weights(run)
    assert after_one["whiten.bias"].abs().sum() > 0  # the stem's bias trains in epoch 1
    train(resume=run, quiet=True)
    after_two = _weights(run)
    assert torch.equal(after_two["whiten.bias"], after_one["whiten.bias"])  # ... and is frozen in epoch 2
    assert not torch.equal(after_two["stages.0.0.weight"], after_one["stages.0.0.weight"])
