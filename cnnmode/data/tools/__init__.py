"""Dataset tools behind `cnnmode data`: check (problems, duplicates, leakage), quarantine and restore, stats,
split, preview and convert. Names load their module on first use."""
from cnnmode.registry import lazy_exports

_HOMES = {"CheckOptions": "options", "check_data": "check", "imbalance": "check", "convert_coco": "convert",
          "convert_idx": "convert", "read_idx": "convert", "class_counts_figure": "dataset_figures",
          "preview_grid": "preview", "quarantine": "quarantine_files", "restore": "quarantine_files",
          "split_dataset": "split", "stratified_split": "split", "dataset_stats": "stats", "stats_figure": "stats"}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
