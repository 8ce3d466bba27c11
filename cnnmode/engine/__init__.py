"""Engine: device and precision, the train/eval loops, optimizers and schedules, checkpoints, the run."""
