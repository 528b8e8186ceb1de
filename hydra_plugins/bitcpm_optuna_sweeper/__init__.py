"""bitcpm's Hydra Sweeper over current Optuna (`hydra/sweeper=optuna`)."""
