"""Quantization-aware training (eager-mode `torch.ao.quantization`, x86 backend).

Supported where the model can run fully quantized: torchvision's quantizable ResNets (residual adds through
FloatFunctional) and the plain sequential nets (wrapped with Quant/DeQuant stubs). Layers are fake-quantized
without fusion, so parameter names stay those of the float model and the usual artifact can be written.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from cnnmode.models import check_qat_supported


def prepare(model: nn.Module, name: str, args: dict) -> nn.Module:
    """A fake-quantized copy of `model` (same float weights) ready for training."""
    check_qat_supported(name)
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


@torch.no_grad()
def finish_qat(qat_model: nn.Module, float_model: nn.Module, test_loader, path: Path) -> dict:
    """Float weights into the registry model; the int8 model converted, scored on `test_loader`, saved as
    TorchScript at `path`."""
    float_model.load_state_dict(float_state(qat_model, float_model))
    int8 = convert(qat_model)
    correct = total = 0
    for x, y in test_loader:
        correct += int((int8(x.cpu().contiguous()).argmax(1) == y.cpu()).sum())
        total += len(y)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = next(iter(test_loader))[0][:2].cpu().contiguous()
    torch.jit.trace(int8, example).save(str(path))
    return {"int8_accuracy": correct / max(total, 1), "file": str(path), "backend": "x86"}
