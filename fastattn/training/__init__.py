"""Training: the trainer, its checkpoints, the data it reads (datasets), data parallel over MPI (distributed)."""
