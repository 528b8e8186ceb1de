"""The wind tunnel: muP coordinate checks, hyperparameter studies, their report and transfer to a target size."""
