"""The model registry: builders by name, and what the rest of CNN Mode asks of a model.

A builder takes (num_classes, in_channels, stem, width, img_size) and returns an nn.Module; the artifact stores the
registry name and these arguments so the model can be rebuilt anywhere.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from cnnmode.errors import UsageError
from cnnmode.registry import Registry

MODELS: Registry = Registry("model")

# models that can run fully quantized after quantization-aware training (torchvision's quantizable ResNets, and
# the plain sequential nets wrapped in Quant/DeQuant stubs); the others have ops without int8 kernels
QAT_MODELS = ("resnet18", "resnet50", "simplecnn", "lenet5")


def resolve_stem(stem: str, img_size: int) -> str:
    """`auto` → cifar below 64 px, imagenet otherwise."""
    return stem if stem != "auto" else ("cifar" if img_size < 64 else "imagenet")


def build_model(name: str, num_classes: int, in_channels: int = 3, stem: str = "cifar", width: int = 0,
                img_size: int = 0) -> nn.Module:
    """Build a registered model by name (`img_size` matters to vision transformers; 0 = their default)."""
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, stem=stem, width=width,
                            img_size=img_size)


def param_count(name: str, num_classes: int = 10, img_size: int = 32) -> int | None:
    """Parameters of a registered model for `num_classes` classes, counted on the meta device (no memory, no
    time); None when the builder cannot run there."""
    import warnings

    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(name, num_classes, 3, resolve_stem("auto", img_size), 0, img_size)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # e.g. torchvision's RegNets initialise with in-place copies the meta device refuses
        return None


def list_models() -> list[str]:
    """Registered model names."""
    return MODELS.names()


def head_module(model: nn.Module) -> nn.Linear:
    """The classifier head: the model's last Linear layer."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@contextmanager
def captured(module: nn.Module, take_input: bool = False) -> Iterator[list[torch.Tensor]]:
    """While open, each forward through `module` appends its first input (`take_input`) or its output, detached,
    to the list it yields: the one place a layer's activations are caught (explain, embed, embedding plots)."""
    seen: list[torch.Tensor] = []
    hook = (module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach())) if take_input
            else module.register_forward_hook(lambda m, args, out: seen.append(out.detach())))
    try:
        yield seen
    finally:
        hook.remove()


def head_inputs(model: nn.Module) -> AbstractContextManager[list[torch.Tensor]]:
    """`captured` at the classifier head's input: the model's embedding of each image."""
    return captured(head_module(model), take_input=True)


def check_qat_supported(name: str) -> None:
    """Refuse models that cannot run fully in int8 with a list of those that can."""
    if name not in QAT_MODELS:
        raise UsageError(f"train.qat=true supports {', '.join(QAT_MODELS)}; {name} has ops without int8 kernels")
