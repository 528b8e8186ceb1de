"""MiniCPM decoder on megatron-core with MiniCPM's muP scalings."""
