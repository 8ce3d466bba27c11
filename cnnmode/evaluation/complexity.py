"""`cnnmode summary`: parameters, FLOPs (torch's flop counter), a per-layer table and a training-memory estimate."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from cnnmode.artifact import load_artifact
from cnnmode.models import build_model, resolve_stem

OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2, "radam": 2, "muon": 1}  # fp32 tensors kept per trainable parameter


def layer_table(model: nn.Module, x: torch.Tensor) -> tuple[list[dict], int]:
    """Per leaf module: name, type, output shape, own parameters, forward FLOPs; and total FLOPs for `x`."""
    rows, hooks = [], []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            def hook(mod, inputs, output, name=name):
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
                rows.append({"name": name, "type": type(mod).__name__, "output_shape": list(shape),
                             "params": sum(p.numel() for p in mod.parameters(recurse=False)),
                             "output_numel": int(output.numel()) if isinstance(output, torch.Tensor) else 0})
            hooks.append(module.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    prefix = type(model).__name__ + "."
    for row in rows:
        row["flops"] = int(sum(counts.get(prefix + row["name"], {}).values()))
    return rows, int(counter.get_total_flops())


def _saved_bytes(model: nn.Module, batch: torch.Tensor, mixed_precision: bool) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of one forward on `batch`."""
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision):
        model(batch)
    return sum(storages.values())


def saved_for_backward(model: nn.Module, shape: tuple[int, int, int], mixed_precision: bool) -> tuple[int, int]:
    """(bytes per image, bytes per step) that a training forward keeps for backward, measured on the CPU (on a
    copy of the model: batch norms update their statistics) at batches of 2 and 4: half their difference is what
    one more image costs; the rest, such as low-precision copies of the weights, is paid once a step. bf16
    autocast stands in for a GPU's fp16/bf16: the same sizes."""
    probe = copy.deepcopy(model).train()
    two, four = (_saved_bytes(probe, torch.zeros(n, *shape), mixed_precision) for n in (2, 4))
    per_image = (four - two) // 2
    return per_image, max(0, two - 2 * per_image)


def summarize(model: nn.Module, img_size: int, in_channels: int = 3, batch_size: int = 128,
              optimizer: str = "adamw", mixed_precision: bool = True) -> dict:
    """Parameters, FLOPs per image, per-layer table, and an estimate of training memory for `batch_size`."""
    rows, flops = layer_table(model, torch.zeros(1, in_channels, img_size, img_size))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    act_bytes = 2 if mixed_precision else 4
    per_image, fixed = saved_for_backward(model, (in_channels, img_size, img_size), mixed_precision)
    activations = per_image * batch_size + fixed
    memory = {"weights": params * 4, "gradients": trainable * 4,
              "optimizer_state": trainable * 4 * OPTIMIZER_STATES.get(optimizer, 2), "activations": activations}
    memory["total"] = sum(memory.values())
    return {"model": type(model).__name__, "img_size": img_size, "in_channels": in_channels,
            "batch_size": batch_size, "params": params, "trainable_params": trainable,
            "flops_per_image": flops, "train_flops_per_image": 3 * flops, "optimizer": optimizer,
            "activation_bytes": act_bytes, "memory_bytes": memory, "layers": rows}


def load_for_summary(target: str, img_size: int | None, num_classes: int, in_channels: int, stem: str = "auto",
                     width: int = 0) -> tuple[nn.Module, int, int]:
    """(model, img_size, channels) from an artifact path or a registry name (built with `stem` and `width`)."""
    if Path(target).exists():
        art = load_artifact(target)
        return art.model, img_size or art.preprocess["img_size"], art.preprocess["channels"]
    size = img_size or 32
    return build_model(target, num_classes, in_channels, resolve_stem(stem, size), width, size), size, in_channels
