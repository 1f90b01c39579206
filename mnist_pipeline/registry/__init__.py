"""The model registry's champion: choosing a run on validation, promoting it past the gate, and
predicting digits with it."""
