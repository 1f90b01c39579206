"""Repeats over seeds (`mnist-pipeline repeat`): one configuration trained with several seeds in
one process, each an ordinary MLflow run of its group, so the group's spread is the seed noise."""
