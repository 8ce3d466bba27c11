"""Quantization-aware training (eager-mode `torch.ao.quantization`, x86 backend).

Supported where the model can run fully quantized: torchvision's quantizable ResNets (residual adds through
FloatFunctional) and the plain sequential nets (wrapped with Quant/DeQuant stubs). Layers are fake-quantized
without fusion, so parameter names stay those of the float model and the usual artifact can be written.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from cnnmode.errors import UsageError

QAT_MODELS = ("resnet18", "resnet50", "simplecnn", "lenet5")


def check_supported(name: str) -> None:
    """Refuse models that cannot run fully in int8 with a list of those that can."""
    if name not in QAT_MODELS:
        raise UsageError(f"train.qat=true supports {', '.join(QAT_MODELS)}; {name} has ops without int8 kernels")


def prepare(model: nn.Module, name: str, args: dict) -> nn.Module:
    """A fake-quantized copy of `model` (same float weights) ready for training."""
    check_supported(name)
    if name.startswith("resnet"):
        from torchvision.models import quantization as tvq

        from cnnmode.models.resnet import make_resnet

        builder = getattr(tvq, name)
        qmodel = make_resnet(lambda **kw: builder(quantize=False, **kw), args["num_classes"], args["in_channels"],
                             args["stem"])
        qmodel.load_state_dict(model.state_dict())
    else:
        qmodel = torch.ao.quantization.QuantWrapper(copy.deepcopy(model))
    qmodel.train()
    qmodel.qconfig = torch.ao.quantization.get_default_qat_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare_qat(qmodel, inplace=True)
    return qmodel


def float_state(qmodel: nn.Module, reference: nn.Module) -> dict:
    """The float weights of a QAT model under the registry model's parameter names."""
    state = {k.removeprefix("module."): v for k, v in qmodel.state_dict().items()}
    return {k: state[k].detach().cpu().clone() for k in reference.state_dict()}


def convert(qmodel: nn.Module) -> nn.Module:
    """The int8 model (x86 kernels) from a trained QAT model."""
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.convert(copy.deepcopy(qmodel).cpu().eval(), inplace=False)
