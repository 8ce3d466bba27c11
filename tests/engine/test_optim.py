import pytest
import torch

from cnnmode.config import resolve_config
from cnnmode.engine.cpu import cpu_kind
from cnnmode.engine.device import pick_precision
from cnnmode.engine.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler


@pytest.mark.parametrize("opt", OPTIMIZERS.names())
@pytest.mark.parametrize("sched", SCHEDULES.names())
def test_every_optimizer_and_schedule_steps(opt, sched):
    cfg = resolve_config(overrides=[f"optim.name={opt}", f"sched.name={sched}", "train.epochs=2",
                                  "sched.warmup_epochs=0.5", "optim.lr=0.01"])
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    optimizer = build_optimizer(cfg, model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [cfg.optim.weight_decay, 0.0]
    scheduler, every = build_scheduler(cfg, optimizer, steps_per_epoch=4)
    before = [p.clone() for p in model.parameters()]
    lrs = []
    for _ in range(8 if every == "step" else 2):
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step(0.5) if sched == "plateau" else scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(lr > 0 for lr in lrs)
    assert torch.load(__import__("io").BytesIO(_dump(scheduler.state_dict())), weights_only=True) is not None


def _dump(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_onecycle_peaks_at_lr_and_ends_low():
    cfg = resolve_config(overrides=["sched.name=onecycle", "train.epochs=2", "optim.lr=0.4"])
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    scheduler, _ = build_scheduler(cfg, optimizer, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert max(lrs) == pytest.approx(0.4, rel=0.1) and lrs.index(max(lrs)) == 5  # pct_start 0.25 of 21 steps
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:]))  # then falls every step
    assert optimizer.param_groups[0]["lr"] < 0.4 / 25  # ends below the starting lr


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_onecycle_trains_on_a_handful_of_steps(steps):
    # 108 images at batch 32 give 3 steps: torch's OneCycleLR alone divides by zero on such runs
    cfg = resolve_config(overrides=["sched.name=onecycle", "train.epochs=1", "optim.lr=0.4"])
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    scheduler, _ = build_scheduler(cfg, optimizer, steps_per_epoch=steps)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(0 < lr <= 0.4 for lr in lrs)


def test_ema_follows_training_on_short_runs_and_settles_at_its_decay():
    from cnnmode.engine.setup import ema_with_warmup
    update = ema_with_warmup(0.99)
    average, current = [torch.zeros(3)], [torch.ones(3)]
    update(average, current, torch.tensor(1))  # decay 2/11 at the second update
    assert average[0][0].item() == pytest.approx(1 - 2 / 11)
    average = [torch.zeros(3)]
    update(average, current, torch.tensor(10_000))  # long runs: the configured decay
    assert average[0][0].item() == pytest.approx(0.01)
    counts = [torch.tensor([3])]
    update(counts, [torch.tensor([7])], torch.tensor(5))  # integer buffers are copied
    assert counts[0].item() == 7


def test_precision_choice_on_cpu():
    cpu = torch.device("cpu")
    assert pick_precision("off", cpu).dtype is None
    assert pick_precision("bf16", cpu).dtype is torch.bfloat16
    assert pick_precision("auto", cpu).dtype is (torch.bfloat16 if cpu_kind().bf16 else None)
    assert not pick_precision("fp16", cpu).use_scaler  # GradScaler only on CUDA


@pytest.mark.parametrize("sched", ["onecycle", "cosine", "constant"])
def test_bias_lr_scale_keeps_its_ratio_through_the_schedule(sched):
    cfg = resolve_config(overrides=[f"sched.name={sched}", "train.epochs=1", "optim.lr=0.1", "optim.bias_lr_scale=8"])
    optimizer = build_optimizer(cfg, torch.nn.Linear(3, 2))
    scheduler, _ = build_scheduler(cfg, optimizer, steps_per_epoch=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        weights, biases = optimizer.param_groups
        assert biases["lr"] == pytest.approx(8 * weights["lr"])


def test_muon_orthogonalises_conv_filters_and_leaves_the_rest_to_sgd():
    cfg = resolve_config(overrides=["optim.name=muon", "optim.muon_lr=0.1", "optim.lr=0.01"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 2))
    optimizer = build_optimizer(cfg, model)
    filters, head_weight, biases = optimizer.param_groups
    assert filters["muon"] and filters["params"] == [model[0].weight] and filters["lr"] == 0.1
    assert head_weight["params"] == [model[4].weight] and biases["lr"] == 0.01

    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 2, (32,))
    losses = []
    for _ in range(20):
        before = model[0].weight.detach().clone()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        update = (before * 8 ** 0.5 / before.norm() - model[0].weight).reshape(8, -1) / 0.1
        singular_values = torch.linalg.svdvals(update.float())
        assert singular_values.min() > 0.3 and singular_values.max() < 1.7  # orthogonalised, not the raw gradient
    assert losses[-1] < 0.5 * losses[0]

    restored = build_optimizer(cfg, model)
    restored.load_state_dict(_roundtrip(optimizer.state_dict()))
    assert torch.equal(restored.state[model[0].weight]["muon_buffer"], optimizer.state[model[0].weight]["muon_buffer"])


def _roundtrip(obj):
    import io
    return torch.load(io.BytesIO(_dump(obj)), weights_only=True)
