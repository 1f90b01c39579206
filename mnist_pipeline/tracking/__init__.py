"""MLflow tracking: the store and run lifecycle, where a run came from, and what a run logs."""
