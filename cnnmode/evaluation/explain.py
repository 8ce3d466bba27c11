"""`cnnmode explain`: Grad-CAM family heatmaps (pytorch-grad-cam), feature-map grids and embedding plots."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from cnnmode.artifact import load_artifact
from cnnmode.data.trained_model_data import data_for_model
from cnnmode.data.inference_inputs import expand_inputs, load_images
from cnnmode.data.labels import strata
from cnnmode.errors import UsageError
from cnnmode.evaluation.options import ExplainOptions
from cnnmode.figures import plt, save_fig, to_display
from cnnmode.files import printable
from cnnmode.models import captured, head_inputs
from cnnmode.rundir import resolve_target

DEFAULT_LAYERS = {"resnet": "layer4", "fastnet": "stages.2", "simplecnn": "1", "lenet5": "3"}


def _cam_classes() -> dict:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}


METHODS = ("gradcam", "gradcam++", "scorecam")


def conv_layers(model: nn.Module) -> list[str]:
    """Names of modules whose output is a feature map (containers and convolutions), in forward order."""
    return [name for name, m in model.named_modules()
            if name and (isinstance(m, (nn.Conv2d, nn.Sequential)) or type(m).__name__ in ("BasicBlock", "Bottleneck",
                                                                                        "Stage"))]


def find_layer(model: nn.Module, name: str | None, model_name: str = "") -> tuple[str, nn.Module]:
    """The named layer, or the architecture's default (the last feature block); unknown names list valid ones."""
    modules = dict(model.named_modules())
    if name is None:
        key = next((k for k in DEFAULT_LAYERS if model_name.startswith(k)), None)
        name = DEFAULT_LAYERS[key] if key and DEFAULT_LAYERS[key] in modules else \
            [n for n, m in modules.items() if isinstance(m, nn.Conv2d)][-1]
    if name not in modules or not name:
        raise UsageError(f"unknown layer '{name}'; valid layers: {', '.join(conv_layers(model))}")
    return name, modules[name]


def cam_maps(model: nn.Module, images: torch.Tensor, method: str = "gradcam", layer: nn.Module | None = None,
             targets: list[int] | None = None) -> np.ndarray:
    """(N, H, W) heatmaps in [0, 1] at the images' size, for `targets` (default: the predicted classes)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    model = model.float().eval()
    layer = layer if layer is not None else find_layer(model, None)[1]
    cam_targets = [ClassifierOutputTarget(int(t)) for t in targets] if targets is not None else None
    kwargs = {"batch_size": 32} if method == "scorecam" else {}
    with _cam_classes()[method](model=model, target_layers=[layer]) as cam:
        for k, v in kwargs.items():
            setattr(cam, k, v)
        return cam(input_tensor=images.float(), targets=cam_targets)


def cam_overlays(images: torch.Tensor, maps: np.ndarray, preprocess: dict) -> tuple[np.ndarray, np.ndarray]:
    """(shown, overlaid): the images as (N, H, W, 3) floats in [0, 1], and each with its heatmap blended over it
    as (N, H, W, 3) uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    shown = to_display(images, preprocess["mean"], preprocess["std"]).numpy()
    rgb = np.repeat(shown, 3, axis=3) if shown.shape[3] == 1 else shown
    return rgb, np.stack([show_cam_on_image(img.astype(np.float32), m, use_rgb=True) for img, m in zip(rgb, maps)])


def cam_figure(images: torch.Tensor, maps: np.ndarray, probs: torch.Tensor, names: list[str], classes: list[str],
               preprocess: dict, method: str, path: Path, topk: int = 5) -> Path:
    """One row per image: the image, the heatmap over it, and the top-k class probabilities."""
    shown, overlaid = cam_overlays(images, maps, preprocess)
    k = min(topk, len(classes))
    fig, axes = plt.subplots(len(images), 3, figsize=(11, 3.3 * len(images)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for row, (rgb, over, p, name) in enumerate(zip(shown, overlaid, probs, names)):
        axes[row, 0].imshow(rgb)
        axes[row, 0].set_title(Path(name).name, fontsize=9)
        axes[row, 1].imshow(over)
        axes[row, 1].set_title(f"{method}: {classes[int(p.argmax())]}", fontsize=9)
        for ax in axes[row, :2]:
            ax.axis("off")
        top = p.topk(k)
        axes[row, 2].barh(range(k), [100 * v for v in top.values.tolist()], color="tab:blue")
        axes[row, 2].set_yticks(range(k))
        axes[row, 2].set_yticklabels([classes[i] for i in top.indices.tolist()])
        axes[row, 2].invert_yaxis()
        axes[row, 2].set_xlim(0, 100)
        axes[row, 2].set_xlabel("probability %")
    return save_fig(fig, path)


def feature_maps(model: nn.Module, images: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The layer's output for `images` (N, C, H, W)."""
    with captured(layer) as seen, torch.no_grad():
        model.float().eval()(images.float())
    return seen[0].float()


def feature_figure(maps: torch.Tensor, layer_name: str, image_name: str, path: Path, channels: int = 16) -> Path:
    """A grid of the first `channels` feature maps of one image."""
    n = min(channels, maps.shape[0])
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(maps[i].numpy(), cmap="viridis")
        ax.set_title(f"ch {i}", fontsize=8)
    fig.suptitle(f"{layer_name} feature maps: {Path(image_name).name}")
    return save_fig(fig, path)


def penultimate_features(model: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of the last Linear layer (the embedding) over a loader, with labels (for label sets: each image's
    rarest label)."""
    labels = []
    with head_inputs(model) as feats, torch.no_grad():
        model.eval()
        for x, y in loader:
            model(x.to(device).float())
            labels.append(y.cpu())
    found = torch.cat(labels)
    found = strata(found) if found.ndim == 2 else found  # label sets: coloured by each image's rarest label
    return torch.cat([f.float().flatten(1).cpu() for f in feats]).numpy(), found.numpy()


def embedding_figure(points: np.ndarray, labels: np.ndarray, classes: list[str], axis_names: tuple[str, str],
                     title: str, path: Path) -> Path:
    """2-D scatter coloured by class."""
    fig, ax = plt.subplots(figsize=(9, 7.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        pick = labels == c
        ax.scatter(points[pick, 0], points[pick, 1], s=6, alpha=0.6, color=cmap(c % cmap.N), label=name)
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1], title=title)
    if len(classes) <= 20:
        ax.legend(markerscale=3, fontsize=8, loc="best")
    return save_fig(fig, path)


def embedding_plots(features: np.ndarray, labels: np.ndarray, classes: list[str], out_dir: Path,
                    tsne: bool = False) -> list[Path]:
    """PCA (explained variance on the axes) and optionally t-SNE scatter plots of the features."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0)
    pts = pca.fit_transform(features)
    var = pca.explained_variance_ratio_
    paths = [embedding_figure(pts, labels, classes, (f"PC1 ({100 * var[0]:.1f}% of variance)",
                                                      f"PC2 ({100 * var[1]:.1f}% of variance)"),
                              f"Penultimate-layer embedding, PCA ({len(labels)} images)",
                              out_dir / "embedding_pca.png")]
    if tsne:
        from sklearn.manifold import TSNE

        pts = TSNE(n_components=2, random_state=0, init="pca",
                   perplexity=min(30, max(5, len(labels) // 4))).fit_transform(features)
        paths.append(embedding_figure(pts, labels, classes, ("t-SNE 1", "t-SNE 2"),
                                      f"Penultimate-layer embedding, t-SNE ({len(labels)} images)",
                                      out_dir / "embedding_tsne.png"))
    return paths


def run_explain(target: str, inputs: list[str], options: ExplainOptions | None = None,
                ) -> tuple[Path, list[Path], list[tuple[Path, str]]]:
    """Write CAM grids (and feature-map grids / embedding plots) for an artifact; returns (out dir, files, failed)."""
    o = options or ExplainOptions()
    method, layer, target_class, features, per_figure = o.method, o.layer, o.target, o.features, o.per_figure
    embedding, tsne, data, split = o.embedding, o.tsne, o.data, o.split
    where = resolve_target(target)
    art = load_artifact(where)
    out_dir = Path(o.out) if o.out else where.home / "explain"
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    if not inputs and not embedding:
        raise UsageError("give images or folders to explain, or --embedding")
    if inputs:
        images, names, failed = load_images(expand_inputs(inputs), art.preprocess)
        if not len(images):
            raise UsageError("none of the given images could be read: "
                             + "; ".join(f"{p}: {r}" for p, r in failed))
        layer_name, module = find_layer(art.model, layer, art.name)
        with torch.no_grad():
            probs = art.probabilities(art.model.float().eval()(images))
        targets = None
        if target_class is not None:
            if target_class not in art.classes:
                raise UsageError(f"unknown class '{target_class}'; choose one of: {', '.join(art.classes)}")
            targets = [art.classes.index(target_class)] * len(images)
        maps = cam_maps(art.model, images, method, module, targets)
        tag = method.replace("+", "p")
        for start in range(0, len(images), per_figure):
            chunk = slice(start, start + per_figure)
            written.append(cam_figure(images[chunk], maps[chunk], probs[chunk], [printable(str(n)) for n in names[chunk]],
                                      art.classes, art.preprocess, method,
                                      out_dir / f"{tag}_{start // per_figure:03d}.png"))
        if features:
            written += _feature_figures(art, images, names, features, out_dir)
    if embedding:
        _, bundle = data_for_model(where, art.preprocess, art.classes, data, "--embedding with")
        feats, labels = penultimate_features(art.model.float(), getattr(bundle, split), torch.device("cpu"))
        written += embedding_plots(feats, labels, art.classes, out_dir, tsne)
    return out_dir, written, failed


def _feature_figures(art, images: torch.Tensor, names: list[Path], layer: str, out_dir: Path) -> list[Path]:
    """One feature-map grid per image, named by its position and file stem so that no two inputs share a file
    (test/cat/0003.jpg and test/dog/0003.jpg both have the stem 0003)."""
    feat_name, feat_module = find_layer(art.model, layer, art.name)
    maps = feature_maps(art.model, images, feat_module)
    return [feature_figure(maps[i], feat_name, printable(str(name)),
                           out_dir / f"features_{feat_name}_{i:04d}_{_safe_stem(name)}.png")
            for i, name in enumerate(names)]


def _safe_stem(path: Path) -> str:
    """A file stem usable in a file name on any filesystem."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "image"
