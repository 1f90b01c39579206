"""The Keras network and what works on trained weights: building and fitting it, reading a
.keras file without TensorFlow, scoring and figures."""
