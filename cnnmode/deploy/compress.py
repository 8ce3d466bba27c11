"""Model compression: pruning (torch.nn.utils.prune) with optional fine-tuning."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from cnnmode.artifact import load_artifact, save_artifact
from cnnmode.config import Config
from cnnmode.data.trained_model_data import data_for_model
from cnnmode.engine.device import Precision, pick_precision
from cnnmode.engine.loop import headline, score_loader, train_one_epoch
from cnnmode.engine.losses import Criterion
from cnnmode.engine.setup import make_step_setup
from cnnmode.errors import UsageError
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir, resolve_target


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, 'weight') for every conv and linear layer."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def apply_pruning(model: nn.Module, amount: float, structured: bool = False) -> None:
    """Global L1 unstructured pruning, or L2 channel (output filter) pruning per conv layer (head excluded)."""
    if not 0 < amount < 1:
        raise UsageError(f"--amount must be in (0, 1), got {amount}")
    if structured:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]
        for m in convs:
            prune.ln_structured(m, "weight", amount=amount, n=2, dim=0)
    else:
        prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    """Fold masks into the weights (removes the pruning re-parametrisation)."""
    for m, name in prunable(model):
        if prune.is_pruned(m) and hasattr(m, name + "_mask"):
            prune.remove(m, name)


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over conv and linear layers."""
    total = zeros = 0
    for m, name in prunable(model):
        w = getattr(m, name)
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / max(total, 1)


def _accuracy(model: nn.Module, loader) -> float:
    return headline(score_loader(model, loader, Precision(None, False), torch.device("cpu")))  # label sets: mAP


def _finetune(model: nn.Module, cfg: Config, data, epochs: int) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr * 0.05,
                          momentum=0.9, nesterov=True, weight_decay=cfg.optim.weight_decay)
    device = torch.device("cpu")
    setup = make_step_setup(cfg, opt, device=device, precision=pick_precision(cfg.train.amp, device))
    criterion = Criterion.from_config(cfg, multilabel=data.multilabel)
    for epoch in range(1, epochs + 1):
        data.train.set_epoch(10_000 + epoch)
        train_one_epoch(model, data.train, criterion, setup)


def run_prune(target: str, amount: float, structured: bool = False, finetune_epochs: int = 0,
              data: str | None = None, out: str | None = None) -> dict:
    """Prune an artifact, measure accuracy before/after (and after fine-tuning), save the pruned artifact."""
    where = resolve_target(target)
    art = load_artifact(where)
    cfg, bundle = data_for_model(where, art.preprocess, art.classes, data, "pruning")
    model = copy.deepcopy(art.model).float()
    report = {"amount": amount, "structured": structured, "finetune_epochs": finetune_epochs,
              "accuracy_before": _accuracy(model, bundle.test), "params": art.params}
    apply_pruning(model, amount, structured)
    report["accuracy_pruned"] = _accuracy(model, bundle.test)
    if finetune_epochs:
        _finetune(model, cfg, bundle, finetune_epochs)
        report["accuracy_finetuned"] = _accuracy(model, bundle.test)
    make_permanent(model)
    report["sparsity"] = sparsity(model)
    report["nonzero_params"] = int(sum(int((p != 0).sum()) for p in model.parameters()))
    folder = Path(out) if out else where.home / "pruned"
    saved = save_artifact(RunDir(folder).model, model, art.name, art.args, art.classes, art.preprocess,
                          art.meta | {"pruned": report})
    report["dense_size_bytes"] = saved.stat().st_size
    report["nonzero_size_bytes"] = report["nonzero_params"] * 4
    report["artifact"] = str(saved)
    atomic_write_text(folder / "prune.json", json.dumps(report, indent=2))
    return report
