"""Every torchvision classification builder as `tv:NAME` (`tv:efficientnet_b0`, `tv:convnext_tiny`,
`tv:vit_b_16`, ...): the head sized to the class count, the first convolution to the input channels, and the
vision transformers to the image size. Weights come from `model.pretrained` (a file, or a torchvision weights name
when online); a head of another class count is left freshly initialised."""
from __future__ import annotations

import torch.nn as nn
from torchvision import models as tvm

from cnnmode.errors import UsageError
from cnnmode.models.api import MODELS

PREFIX = "tv:"
SIZED = ("vit_", "swin", "maxvit")  # builders whose layers depend on the input size


def swap_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d with one taking `in_channels` (same kernel, stride, padding, width)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups if module.groups == 1 else in_channels,
                            module.bias is not None)
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], new)
            return


def make_tv(name: str, num_classes: int, in_channels: int = 3, img_size: int = 0) -> nn.Module:
    """torchvision's `name` built for this data (no weights)."""
    kwargs: dict = {"num_classes": num_classes}
    if name.startswith("vit_") and img_size:
        kwargs["image_size"] = img_size
    if name in ("googlenet", "inception_v3"):
        kwargs |= {"aux_logits": False, "init_weights": True}
    try:
        model = tvm.get_model(name, weights=None, **kwargs)
    except (AssertionError, ValueError) as e:
        raise UsageError(f"tv:{name} cannot be built for {img_size or 224} px images ({e}); "
                         "change data.img_size") from None
    if in_channels != 3:
        swap_first_conv(model, in_channels)
    return model


def _register(name: str) -> None:
    family = "vision transformer" if name.startswith(SIZED) else "CNN"

    @MODELS.register(PREFIX + name, help=f"torchvision {name} ({family}; head sized to the classes)")
    def build(num_classes: int, in_channels: int = 3, stem: str = "imagenet", width: int = 0,
              img_size: int = 0) -> nn.Module:
        return make_tv(name, num_classes, in_channels, img_size)


for _name in tvm.list_models(module=tvm):
    _register(_name)
