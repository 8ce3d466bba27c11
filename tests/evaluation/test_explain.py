"""CAM heatmaps point at the object that decides the class; features, embeddings and bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnnmode import load_artifact, train
from cnnmode.config import resolve_config
from cnnmode.data.inference_inputs import load_images
from cnnmode.errors import UsageError
from cnnmode.evaluation.explain import cam_maps, find_layer, run_explain
from cnnmode.evaluation.options import ExplainOptions
from tests.conftest import fast_overrides, run_cli


def object_image(rng, with_object: bool, y=None, x=None, size=32, side=8):
    img = rng.integers(40, 110, (size, size, 3), dtype=np.uint8)
    if with_object:
        y = rng.integers(0, size - side) if y is None else y
        x = rng.integers(0, size - side) if x is None else x
        img[y:y + side, x:x + side] = (255, 255, 80)
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def localised(tmp_path_factory):
    """A model that must find a small yellow square ('object') among noise ('blank')."""
    tmp = tmp_path_factory.mktemp("cam")
    rng = np.random.default_rng(0)
    for split, n in (("train", 150), ("test", 20)):
        for cls in ("blank", "object"):
            (tmp / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                object_image(rng, cls == "object").save(tmp / "data" / split / cls / f"{i}.png")
    cfg = resolve_config(overrides=fast_overrides(tmp, tmp / "data", **{
        "train.epochs": 4, "aug.flip": False, "aug.crop_padding": 0, "run.name": "cam", "train.batch_size": 32}))
    run = train(cfg, quiet=True)
    return run, tmp


def test_trained_model_detects_the_object(localised):
    import json
    run, _ = localised
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.9


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_peaks_inside_the_object(localised, tmp_path, method):
    run, _ = localised
    art = load_artifact(run)
    rng = np.random.default_rng(1)
    boxes = [(2, 3), (20, 22), (5, 21), (22, 4)]
    for i, (y, x) in enumerate(boxes):
        object_image(rng, True, y, x).save(tmp_path / f"{i}.png")
    images, _, _ = load_images([tmp_path / f"{i}.png" for i in range(len(boxes))], art.preprocess)
    _, layer = find_layer(art.model, None, art.name)
    maps = cam_maps(art.model, images, method, layer, targets=[art.classes.index("object")] * len(boxes))
    assert maps.shape == (len(boxes), 32, 32) and maps.min() >= 0 and maps.max() <= 1
    for cam, (y, x) in zip(maps, boxes):
        py, px = np.unravel_index(cam.argmax(), cam.shape)
        assert y - 2 <= py < y + 10 and x - 2 <= px < x + 10, (method, (y, x), (py, px))
        inside = cam[y:y + 8, x:x + 8].mean()
        assert inside > 2 * cam.mean() * 0.9  # the object region is hotter than the image on average


def test_explain_cli_writes_grids_features_and_embedding(localised, tmp_path):
    run, tmp = localised
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    result = run_cli("explain", str(run), str(tmp / "data" / "test" / "object"), str(tmp_path / "bad.jpg"),
                     "--method", "scorecam", "--features", "0", "--embedding", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr and "bad.jpg" in result.stderr
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert {"scorecam_000.png", "scorecam_001.png", "scorecam_002.png", "embedding_pca.png"} <= set(files)
    assert len([f for f in files if f.startswith("features_0_")]) == 20
    img = np.asarray(Image.open(tmp_path / "o" / "embedding_pca.png").convert("L"), dtype=float)
    assert img.std() > 10


def test_feature_maps_of_same_named_images_in_two_folders_do_not_overwrite(localised, tmp_path):
    run, tmp = localised
    inputs = [str(tmp / "data" / "test" / cls / "3.png") for cls in ("blank", "object")]
    _, files, _ = run_explain(str(run), inputs, ExplainOptions(features="0", out=str(tmp_path)))
    features = [f for f in files if f.name.startswith("features_")]
    assert len(features) == 2 and len({f.name for f in features}) == 2 and all(f.exists() for f in features)


def test_unknown_layer_lists_valid_ones(localised, tmp_path):
    run, tmp = localised
    with pytest.raises(UsageError, match=r"unknown layer 'nope'; valid layers: 0, 0.0"):
        run_explain(str(run), [str(tmp / "data" / "test" / "object" / "0.png")], ExplainOptions(layer="nope", out=str(tmp_path)))


def test_unknown_target_class(localised, tmp_path):
    run, tmp = localised
    with pytest.raises(UsageError, match="choose one of: blank, object"):
        run_explain(str(run), [str(tmp / "data" / "test" / "object" / "0.png")],
                    ExplainOptions(target="cat", out=str(tmp_path)))


def test_summary_flops_match_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode
    from cnnmode.evaluation.complexity import summarize
    from cnnmode.models import build_model
    model = build_model("resnet18", 10, stem="cifar")
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    s = summarize(model, 32, 3, batch_size=64)
    assert s["flops_per_image"] == counter.get_total_flops()
    assert sum(r["flops"] for r in s["layers"]) == s["flops_per_image"]
    assert s["params"] == 11_173_962
    conv1 = next(r for r in s["layers"] if r["name"] == "conv1")
    assert conv1["output_shape"] == [1, 64, 32, 32] and conv1["params"] == 1728
    mem = s["memory_bytes"]
    assert mem["weights"] == mem["gradients"] == 11_173_962 * 4 and mem["optimizer_state"] == 2 * mem["weights"]


def test_summary_cli_json():
    import json
    result = run_cli("summary", "resnet50", "--json", "--img-size", "32")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["params"] == 23_520_842
    bad = run_cli("summary", "vgg")
    assert bad.returncode == 2 and "unknown model 'vgg'" in bad.stderr


def test_the_memory_estimate_counts_what_autograd_keeps_per_image_and_per_step():
    from cnnmode.evaluation.complexity import saved_for_backward
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    per_image, fixed = saved_for_backward(model, (3, 16, 16), mixed_precision=False)
    assert per_image == (3 + 8) * 16 * 16 * 4  # the conv's input and the ReLU's output, fp32
    assert fixed == 8 * 3 * 3 * 3 * 4  # the conv's weight, once a step
    half, _ = saved_for_backward(model, (3, 16, 16), mixed_precision=True)
    assert half == per_image // 2  # bf16 copies under autocast


def test_summary_describes_the_network_a_recipe_trains():
    import json
    result = run_cli("summary", "--recipe", "cnnmode-resnet50", "--json")
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    conv1 = next(r for r in s["layers"] if r["name"] == "conv1")
    assert s["img_size"] == 80 and s["batch_size"] == 64 and s["optimizer"] == "adamw"
    assert conv1["output_shape"] == [1, 64, 80, 80]  # the CIFAR stem: 3x3, stride 1, no max-pool
    both = run_cli("summary", "resnet18", "--recipe", "speed")
    assert both.returncode == 2 and "not both" in both.stderr
    none = run_cli("summary")
    assert none.returncode == 2 and "--recipe" in none.stderr
