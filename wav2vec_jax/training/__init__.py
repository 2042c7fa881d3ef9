"""The training loop and its parts: state, step, optimiser, partitioning, checkpoints, metrics, FLOPs, runtime."""
