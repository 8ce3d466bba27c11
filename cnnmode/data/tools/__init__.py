"""Dataset tools behind `cnnmode data`: check (problems, duplicates, leakage), quarantine and restore."""
from cnnmode.data.tools.check import CheckOptions, check_data, imbalance
from cnnmode.data.tools.figures import class_counts_figure
from cnnmode.data.tools.quarantine import quarantine, restore

__all__ = ["CheckOptions", "check_data", "class_counts_figure", "imbalance", "quarantine", "restore"]
