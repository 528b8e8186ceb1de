"""Quantization-aware training: ternary fake quantization and the converter that applies it."""
