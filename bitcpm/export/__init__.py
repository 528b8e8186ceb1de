"""Exports of a trained bitcpm model: Hugging Face (llama / minicpm layouts), packed ternary, GGUF."""
