"""Training: the Lightning loop, its callbacks, checkpoints, resume, performance switches and DDP."""
