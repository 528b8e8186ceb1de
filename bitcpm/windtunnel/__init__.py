"""The wind tunnel: muP coordinate checks, hyperparameter studies, their report and transfer to a target size, and
scaling ladders that predict a target size's loss per precision (ladder*.py)."""
