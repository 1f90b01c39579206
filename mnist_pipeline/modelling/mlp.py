"""The network's arithmetic in NumPy: a stack of Dense layers held as `get_weights()` lists it
([kernel, bias] per layer), its forward pass and Keras' cross-entropy. Scoring a saved model and
the portable trainer (numpy_training.py) compute with it, without importing TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Keras' `backend.epsilon()`: how far from 0 and 1 it clips probabilities before taking logs.
KERAS_EPSILON = 1e-7


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, as Keras computes it."""
    # Subtracting each row's maximum leaves softmax unchanged and keeps exp from overflowing.
    exponentials = np.exp(z - z.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


# Every activation a Dense layer may name here, by Keras' name. The sigmoid is written as
# exp(-log(1 + exp(-z))), which never overflows for very negative z.
ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: np.exp(-np.logaddexp(0, -z)),
    "softmax": softmax,
    "linear": lambda z: z,
}


def forward(weights: Sequence[np.ndarray], x: np.ndarray, activations: Sequence[str]) -> np.ndarray:
    """The Dense stack's outputs for x, with one activation name per layer."""
    output = x.astype(weights[0].dtype, copy=False)
    for kernel, bias, name in zip(weights[0::2], weights[1::2], activations, strict=True):
        preactivation = output @ kernel
        preactivation += bias
        output = ACTIVATIONS[name](preactivation)
    return output


def predict_proba(
    weights: Sequence[np.ndarray], x: np.ndarray, activations: Sequence[str], batch_size: int = 1024
) -> np.ndarray:
    """forward, batch_size rows at a time: bounds the memory, does not change the result."""
    return np.concatenate(
        [
            forward(weights, x[start : start + batch_size], activations)
            for start in range(0, len(x), batch_size)
        ]
    )


def categorical_crossentropy(y_onehot: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean cross-entropy as `keras.losses.CategoricalCrossentropy` computes it from bare
    probabilities: renormalised, then clipped to [1e-7, 1 - 1e-7]."""
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    clipped = np.clip(probabilities, KERAS_EPSILON, 1 - KERAS_EPSILON)
    return float(np.mean(-np.sum(y_onehot * np.log(clipped), axis=1)))
