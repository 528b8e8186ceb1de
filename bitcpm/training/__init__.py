"""The worker side: distributed set-up, optimizer, schedule, loop, checkpoints (imports torch/megatron)."""
