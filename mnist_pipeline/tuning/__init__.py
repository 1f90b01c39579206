"""Hyperparameter search with Optuna (`mnist-pipeline tune`): where a study lives and how the
workers that run its trials share one budget."""
