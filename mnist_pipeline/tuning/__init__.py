"""Hyperparameter search with Optuna: the search space, the study and its workers."""
