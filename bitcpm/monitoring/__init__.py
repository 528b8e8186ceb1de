"""Per-rank system metrics (device memory, utilisation) sampled during training."""
