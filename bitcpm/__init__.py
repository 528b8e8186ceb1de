"""bitcpm: declarative experiment orchestration for ternary (1.58-bit) MiniCPM training."""

__version__ = "0.1.0"
