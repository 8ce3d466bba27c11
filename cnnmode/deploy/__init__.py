"""Deployment: the artifact and what uses it."""
