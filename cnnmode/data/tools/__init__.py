"""Dataset tools behind `cnnmode data`: check (problems, duplicates, leakage), quarantine and restore, stats,
split, preview and convert."""
from cnnmode.data.tools.check import CheckOptions, check_data, imbalance
from cnnmode.data.tools.convert import convert_coco, convert_idx, read_idx
from cnnmode.data.tools.figures import class_counts_figure
from cnnmode.data.tools.preview import preview_grid
from cnnmode.data.tools.quarantine import quarantine, restore
from cnnmode.data.tools.split import split_dataset, stratified_split
from cnnmode.data.tools.stats import dataset_stats, stats_figure

__all__ = ["CheckOptions", "check_data", "class_counts_figure", "convert_coco", "convert_idx", "dataset_stats",
           "imbalance", "preview_grid", "quarantine", "read_idx", "restore", "split_dataset", "stats_figure",
           "stratified_split"]
