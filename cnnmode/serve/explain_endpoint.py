"""POST /v1/explain: a Grad-CAM heatmap over one image, from the PyTorch model of the served artifact.

Gradients need the fp32 `nn.Module`: the served artifact's own model (the backends run copies of it) runs on its
own thread, one explanation at a time, outside the batcher. Exported `.onnx`/`.ts` files cannot be explained.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io

import torch
from PIL import Image

from cnnmode.artifact import Artifact
from cnnmode.evaluation.explain import cam_maps, cam_overlays, find_layer
from cnnmode.serve.images import ImageRejected

METHODS = ("gradcam", "gradcam++")  # Score-CAM runs hundreds of forward passes: too slow for a request
MIN_SIDE = 224  # small models' inputs (32 px) are enlarged so the page shows a heatmap one can read


class Explainer:
    """Grad-CAM for a loaded artifact; `explain` returns what the endpoint answers."""

    def __init__(self, art: Artifact) -> None:
        self.art, self.model = art, art.model.float().eval()
        self.layer_name, self.layer = find_layer(self.model, None, art.name)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnmode-explain")

    async def explain(self, image: torch.Tensor, method: str, target: str | None) -> dict:
        """The heatmap of `method` for class `target` (default: the predicted class) over one preprocessed image."""
        if method not in METHODS:
            raise ImageRejected(422, f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._explain, image, method, target)

    def close(self) -> None:
        """Stop the explanation thread once it has finished its work."""
        self._thread.shutdown(wait=True)

    def _explain(self, image: torch.Tensor, method: str, target: str | None) -> dict:
        art, model, layer_name, layer = self.art, self.model, self.layer_name, self.layer
        with torch.no_grad():
            probs = art.probabilities(model(image[None].float()))[0]
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
