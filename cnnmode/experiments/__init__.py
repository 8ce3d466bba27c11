"""Experiments across runs: ablation studies, Optuna search, K-fold, comparison tables, LR finder, baselines."""
