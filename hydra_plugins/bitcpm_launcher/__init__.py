"""bitcpm's Hydra Launcher plugin (`hydra/launcher=bitcpm`, the default of conf/train.yaml)."""
