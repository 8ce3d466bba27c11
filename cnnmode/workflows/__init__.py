"""Whole jobs built from the floors below: a training run from config to finished run folder, distillation."""
from cnnmode.workflows.train import train

__all__ = ["train"]
