"""MNIST itself and the pipeline's data: its facts and digests, where it comes from, reading the
saved splits and turning images into the network's inputs."""
