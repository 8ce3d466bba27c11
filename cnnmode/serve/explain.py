"""POST /v1/explain: a Grad-CAM heatmap over one image, from the PyTorch model of the served artifact.

Gradients need the fp32 `nn.Module`, so the artifact is loaded a second time (on the first call) and run on its
own thread, one explanation at a time, outside the batcher. Exported `.onnx`/`.ts` files cannot be explained.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
from pathlib import Path

import torch
from PIL import Image

from cnnmode.artifact import load_artifact
from cnnmode.evaluation.explain import cam_maps, cam_overlays, find_layer
from cnnmode.serve.images import ImageRejected

METHODS = ("gradcam", "gradcam++")  # Score-CAM runs hundreds of forward passes: too slow for a request
MIN_SIDE = 224  # small models' inputs (32 px) are enlarged so the page shows a heatmap one can read


class Explainer:
    """Grad-CAM for the artifact at `file`; `explain` returns what the endpoint answers."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnmode-explain")
        self._loaded: tuple | None = None

    @staticmethod
    def supports(file: Path) -> bool:
        """Only a PyTorch artifact (model.pt) has the gradients Grad-CAM needs."""
        return file.suffix == ".pt"

    async def explain(self, image: torch.Tensor, method: str, target: str | None) -> dict:
        """The heatmap of `method` for class `target` (default: the predicted class) over one preprocessed image."""
        if method not in METHODS:
            raise ImageRejected(422, f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._explain, image, method, target)

    def close(self) -> None:
        """Stop the explanation thread once it has finished its work."""
        self._thread.shutdown(wait=True)

    def _load(self) -> tuple:
        if self._loaded is None:
            art = load_artifact(self.file)
            model = art.model.float().eval()
            layer_name, layer = find_layer(model, None, art.name)
            self._loaded = (art, model, layer_name, layer)
        return self._loaded

    def _explain(self, image: torch.Tensor, method: str, target: str | None) -> dict:
        art, model, layer_name, layer = self._load()
        with torch.no_grad():
            probs = (model(image[None].float()) / art.preprocess.get("temperature", 1.0)).softmax(-1)[0]
        if target is None:
            index = int(probs.argmax())
        elif target in art.classes:
            index = art.classes.index(target)
        else:
            raise ImageRejected(422, f"unknown class '{target}'; the classes are: {', '.join(art.classes)}")
        maps = cam_maps(model, image[None], method, layer, [index])
        _, overlaid = cam_overlays(image[None], maps, art.preprocess)
        return {"class": art.classes[index], "probability": round(float(probs[index]), 6),
                "predicted": art.classes[int(probs.argmax())], "method": method, "layer": layer_name,
                "overlay": "data:image/png;base64," + _png_base64(overlaid[0])}


def _png_base64(pixels) -> str:
    img = Image.fromarray(pixels)
    scale = max(1, -(-MIN_SIDE // min(img.size)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()
