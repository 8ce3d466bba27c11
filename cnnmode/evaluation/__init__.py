"""Evaluation: metrics and pictures of a run."""
