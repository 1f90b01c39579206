"""What the logged runs say: statistics over scores (seed noise, whether a difference is larger
than it), with no MLflow or TensorFlow in it."""
