"""Serving over HTTP: `create_app` (FastAPI) with its dynamic batcher, limits, metrics and web page, told what to
do by `ServeOptions`. Names load their module on first use, so the command line reads the options without torch."""
from cnnmode.registry import lazy_exports

_HOMES = {"create_app": "app", "ServeOptions": "options"}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
