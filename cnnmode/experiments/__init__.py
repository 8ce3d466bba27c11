"""Experiments across runs: comparison tables, learning-rate finder."""
