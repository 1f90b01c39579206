"""mnist-pipeline: the classic Keras MNIST network as a cached DVC pipeline tracked in MLflow."""
