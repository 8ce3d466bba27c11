"""Engine: fitting a model - its setup (model, optimizer, schedule, EMA), the step and epoch loops, checkpoints,
device and precision. It knows nothing of evaluation, deployment or the CLI (see docs/architecture.md)."""
