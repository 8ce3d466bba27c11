"""The command line: one module per verb family (train, evaluate, deploy, experiments), each parser beside its
handler; verbs parse, call the Python API, and print."""
from cnnmode.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
