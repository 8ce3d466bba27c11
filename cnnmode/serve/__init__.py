"""Serving over HTTP: `create_app` (FastAPI) with its dynamic batcher, limits, metrics and web page."""
from cnnmode.serve.app import create_app
from cnnmode.serve.options import ServeOptions

__all__ = ["ServeOptions", "create_app"]
