"""Data layer: built-in corpus, tokenizers, dataset preparation and sampling."""
