"""Evaluation of exported models with lm-evaluation-harness, tracked in the training run's MLflow run."""
