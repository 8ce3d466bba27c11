"""What a predict or explain request carries: its images (multipart files, JSON base64, or one image as the raw
body with `Content-Type: image/*` or `application/octet-stream`) and its checked parameters; and the OpenAPI
description of those bodies."""
from __future__ import annotations

import json

from fastapi import Request
from starlette.exceptions import HTTPException

from cnnmode.serve.images import ImageRejected, from_base64
from cnnmode.serve.options import ServeOptions

BINARY = ("image/", "application/octet-stream")


async def read_request(request: Request, options: ServeOptions) -> tuple[list[str], list[bytes], dict]:
    """(names, bytes, parameters) from multipart files, JSON {"images": [base64, ...]}, or a raw image body (its
    parameters in the query string, its name from `X-Filename`)."""
    kind = request.headers.get("content-type", "")
    params: dict = dict(request.query_params)
    if kind.startswith("multipart/form-data"):
        form = await _form(request, options)
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        names = [f.filename or f"image{i}" for i, f in enumerate(files)]
        blobs = [await f.read() for f in files]
        params |= {k: v for k, v in form.multi_items() if isinstance(v, str)}
    elif kind.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ImageRejected(422, "the body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise ImageRejected(422, 'send JSON {"images": [base64, ...], "topk": K, "threshold": P}')
        blobs = [from_base64(text) for text in body["images"]]
        names = [f"image{i}" for i in range(len(blobs))]
        params |= {k: body[k] for k in ("topk", "threshold", "method", "class") if k in body}
        if "topk" in body and (not isinstance(body["topk"], int) or isinstance(body["topk"], bool)):
            raise ImageRejected(422, f"topk must be a whole number (got {body['topk']!r})")
    elif kind.startswith(BINARY):
        blobs, names = [await request.body()], [request.headers.get("x-filename") or "image0"]
    else:
        raise ImageRejected(415, "send images as multipart/form-data files, as JSON {\"images\": [base64, ...]}, "
                                 "or one image as the body with Content-Type image/* or application/octet-stream")
    if not blobs:
        raise ImageRejected(422, "no images in the request")
    if len(blobs) > options.max_images:
        raise ImageRejected(413, f"{len(blobs)} images is more than --max-images ({options.max_images})")
    return names, blobs, params


async def _form(request: Request, options: ServeOptions):
    """The multipart form, with its limits: too many files is 413 (as --max-images says), a malformed body 422."""
    from starlette.formparsers import MultiPartException

    try:
        return await request.form(max_files=options.max_images, max_fields=16)
    except (MultiPartException, HTTPException) as e:
        text = str(getattr(e, "detail", None) or getattr(e, "message", None) or e)
        if "Too many files" in text:
            raise ImageRejected(413, f"more files than --max-images ({options.max_images})") from None
        raise ImageRejected(422, f"malformed multipart body: {text}") from None


def _whole(value, name: str) -> int:
    """A whole number from JSON (an int, not a bool or a fraction) or from a form field (its digits)."""
    if isinstance(value, bool) or isinstance(value, float) or (isinstance(value, str) and not value.strip().isdigit()):
        raise ImageRejected(422, f"{name} must be a whole number (got {value!r})")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImageRejected(422, f"{name} must be a whole number (got {value!r})") from None


def predict_params(params: dict, num_classes: int) -> tuple[int, float]:
    """(topk, threshold) of a predict request, checked."""
    topk = _whole(params.get("topk", 5), "topk")
    try:
        threshold = params.get("threshold", 0.0)
        if isinstance(threshold, bool):
            raise ValueError
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ImageRejected(422, "topk must be a whole number and threshold a number") from None
    if topk < 1 or not 0 <= threshold <= 1:
        raise ImageRejected(422, "topk must be >= 1 and threshold in [0, 1]")
    return min(topk, num_classes), threshold


RAW_IMAGE = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "image/png": RAW_IMAGE, "image/jpeg": RAW_IMAGE, "application/octet-stream": RAW_IMAGE,
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "topk": {"type": "integer", "minimum": 1}, "threshold": {"type": "number", "minimum": 0, "maximum": 1}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
        "topk": {"type": "integer", "minimum": 1}, "threshold": {"type": "number", "minimum": 0, "maximum": 1}}}}}}}


EXPLAIN_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": 1},
        "method": {"type": "string", "enum": ["gradcam", "gradcam++"]}, "class": {"type": "string"}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}, "maxItems": 1},
        "method": {"type": "string", "enum": ["gradcam", "gradcam++"]}, "class": {"type": "string"}}}}}}}
