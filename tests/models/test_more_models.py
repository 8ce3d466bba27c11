"""The torchvision builders (`tv:NAME`) and the small ViT: every builder is registered and builds; one model of each
family runs at its smallest input; a set of them trains a step and exports to ONNX with parity."""
from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

from cnnmode.artifact import save_artifact
from cnnmode.deploy.export import export
from cnnmode.engine.setup import frozen_parameters
from cnnmode.errors import UsageError
from cnnmode.models import MODELS, build_model, param_count

# the smallest of each torchvision family, with the smallest input it takes
FAMILIES = {"alexnet": 64, "convnext_tiny": 32, "densenet121": 32, "efficientnet_b0": 32, "efficientnet_v2_s": 32,
            "googlenet": 32, "inception_v3": 75, "maxvit_t": 224, "mnasnet0_5": 32, "mobilenet_v2": 32,
            "mobilenet_v3_small": 32, "regnet_x_400mf": 32, "regnet_y_400mf": 32, "resnet18": 32,
            "resnext50_32x4d": 32, "shufflenet_v2_x0_5": 32, "squeezenet1_1": 32, "swin_t": 32, "swin_v2_t": 32,
            "vgg11": 32, "vit_b_32": 32, "wide_resnet50_2": 32}
TRAIN_AND_EXPORT = ["vit-small", "tv:mobilenet_v3_small", "tv:efficientnet_b0", "tv:shufflenet_v2_x0_5",
                    "tv:regnet_x_400mf", "tv:squeezenet1_1", "tv:vit_b_32"]


def test_every_torchvision_classifier_is_registered_with_a_size():
    names = {f"tv:{n}" for n in tvm.list_models(module=tvm)}
    assert names <= set(MODELS.names()) and len(names) == 80
    counted = {n: param_count(n, img_size=224) for n in sorted(names) if not n.startswith("tv:regnet")}
    assert all(c and c > 0 for c in counted.values()), [n for n, c in counted.items() if not c]
    assert param_count("tv:resnet18", num_classes=10, img_size=224) == 11_181_642


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_one_of_each_family_runs_at_its_smallest_input(name):
    size = FAMILIES[name]
    model = build_model(f"tv:{name}", 5, 1, "imagenet", 0, size).eval()  # grey input: the first conv is swapped
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 5)


@pytest.mark.parametrize("name", TRAIN_AND_EXPORT)
def test_trains_a_step_and_exports_to_onnx_with_parity(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 3, 3, "cifar", 0, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model.train()(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    args = {"num_classes": 3, "in_channels": 3, "stem": "cifar", "width": 0, "img_size": 32}
    preprocess = {"img_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "channels": 3, "temperature": 1.0}
    art = save_artifact(tmp_path / "model.pt", model.eval(), name, args, ["a", "b", "c"], preprocess)
    [result] = export(str(art), ["onnx"], str(tmp_path / "export"))
    assert result["ok"] and result["top1_agreement"] == 1.0, result


def test_freeze_until_a_layer_trains_only_what_follows():
    model = build_model("resnet18", 10, 3, "cifar", 0, 32)
    frozen = {id(p) for p in frozen_parameters(model, "until:layer3")}
    trainable = [n for n, p in model.named_parameters() if id(p) not in frozen]
    assert trainable and all(n.startswith(("layer4.", "fc.")) for n in trainable)
    assert len(frozen) + len(trainable) == len(list(model.parameters()))
    with pytest.raises(UsageError, match="top-level layers: conv1"):
        frozen_parameters(model, "until:nope")
