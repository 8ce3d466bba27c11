"""Deployment: the runtime registry (every backend behind `load_runner`), predict, export, bench, quantize, prune."""
