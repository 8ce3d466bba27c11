"""Request bytes → the tensor the model expects, exactly as the artifact describes, with the server's limits."""
from __future__ import annotations

import base64
import binascii
import io

import torch
from PIL import Image, UnidentifiedImageError

from cnnmode.data.decode import DECODE_ERRORS, pil_to_mode
from cnnmode.data.inference_inputs import transform_for


class ImageRejected(Exception):
    """One image the server will not take: `status` is the HTTP status it earns on its own (413, 415, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def from_base64(text: str) -> bytes:
    """The bytes of a base64 image (a `data:image/...;base64,` prefix is allowed)."""
    if not isinstance(text, str):
        raise ImageRejected(422, "images must be base64 strings")
    try:
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(422, "not valid base64") from None


class Preprocessor:
    """Decodes one image's bytes and applies the model's preprocessing (resize, crop, normalise, channels)."""

    def __init__(self, preprocess: dict, max_pixels: int) -> None:
        self.preprocess, self.max_pixels = preprocess, max_pixels
        self.transform = transform_for(preprocess)

    def __call__(self, data: bytes) -> torch.Tensor:
        if not data:
            raise ImageRejected(415, "empty file")
        try:
            with Image.open(io.BytesIO(data)) as img:
                pixels = img.size[0] * img.size[1]  # from the header: nothing is decoded yet
                if pixels > self.max_pixels:
                    raise ImageRejected(413, f"{img.size[0]}x{img.size[1]} pixels is more than --max-pixels "
                                             f"({self.max_pixels})")
                return self.transform(pil_to_mode(img, self.preprocess["channels"]))
        except ImageRejected:
            raise
        except UnidentifiedImageError:
            raise ImageRejected(415, "not an image (or a format Pillow cannot read)") from None
        except Image.DecompressionBombError:  # Pillow's own cap (about 179 M pixels) fires before ours can
            raise ImageRejected(413, f"the image has more pixels than --max-pixels ({self.max_pixels})") from None
        except DECODE_ERRORS as e:
            raise ImageRejected(415, f"cannot decode: {type(e).__name__}: {e}") from None
