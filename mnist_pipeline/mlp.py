"""The chapter's network as arrays: Dense(hidden_units, activation) -> Dense(10, softmax).

Its weights (in the layout of `keras.Model.get_weights()`), activations, forward pass,
predictions and loss, in NumPy only: what evaluating and serving a trained model need. Training
it from scratch (backpropagation, optimizers) builds on this in mnist_pipeline.numpy_mlp, so
editing the teaching code does not re-run the evaluate stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# Keras' `backend.epsilon()`: how far from 0 and 1 it clips probabilities before taking logs.
KERAS_EPSILON = 1e-7
# Rows per forward pass in predict_proba; bounds memory, does not change the result.
PREDICT_BATCH_SIZE = 1024


@dataclass
class MLPWeights:
    """The four trainable arrays of Dense -> Dense, shaped as Keras stores them.

    Gradients use the same structure: one array per weight, of the same shape.
    """

    hidden_kernel: np.ndarray  # (input_dim, hidden_units)
    hidden_bias: np.ndarray  # (hidden_units,)
    output_kernel: np.ndarray  # (hidden_units, num_classes)
    output_bias: np.ndarray  # (num_classes,)

    def __post_init__(self) -> None:
        arrays = self.named_arrays()
        for name, array in arrays.items():
            if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"MLPWeights.{name} must be a floating-point NumPy array")
        dtypes = {name: array.dtype for name, array in arrays.items()}
        if len(set(dtypes.values())) != 1:
            raise ValueError(f"MLPWeights arrays must share one dtype, got {dtypes}")
        shapes = {name: array.shape for name, array in arrays.items()}
        if self.hidden_kernel.ndim != 2 or self.output_kernel.ndim != 2:
            raise ValueError(f"MLPWeights kernels must be 2D, got shapes {shapes}")
        input_dim, hidden_units = self.hidden_kernel.shape
        num_classes = self.output_kernel.shape[1]
        expected = {
            "hidden_kernel": (input_dim, hidden_units),
            "hidden_bias": (hidden_units,),
            "output_kernel": (hidden_units, num_classes),
            "output_bias": (num_classes,),
        }
        if shapes != expected:
            raise ValueError(
                f"MLPWeights shapes do not fit together: got {shapes}, expected {expected}"
            )

    @property
    def input_dim(self) -> int:
        return self.hidden_kernel.shape[0]

    @property
    def hidden_units(self) -> int:
        return self.hidden_kernel.shape[1]

    @property
    def num_classes(self) -> int:
        return self.output_kernel.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.hidden_kernel.dtype

    def named_arrays(self) -> dict[str, np.ndarray]:
        """The arrays by field name, in Keras' order."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def as_keras_list(self) -> list[np.ndarray]:
        """[hidden_kernel, hidden_bias, output_kernel, output_bias], as `get_weights()` lists."""
        return list(self.named_arrays().values())

    @classmethod
    def from_keras_list(cls, arrays: Sequence[ArrayLike]) -> MLPWeights:
        """The inverse of as_keras_list, e.g. from `model.get_weights()`; copies the arrays."""
        if len(arrays) != 4:
            raise ValueError(
                "expected 4 arrays [hidden_kernel, hidden_bias, output_kernel, output_bias], "
                f"got {len(arrays)}"
            )
        return cls(*(np.array(array) for array in arrays))

    def copy(self) -> MLPWeights:
        return MLPWeights(*(array.copy() for array in self.as_keras_list()))


@dataclass(frozen=True)
class Activation:
    """A hidden-layer activation and its derivative."""

    name: str
    function: Callable[[np.ndarray], np.ndarray]
    # The derivative takes both the pre-activation z and the output a = function(z), because
    # tanh and sigmoid have cheap derivatives in terms of a, while relu's needs z.
    derivative: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-z))) never overflows and stays accurate for very negative z, where
    # 1 / (1 + exp(-z)) would overflow.
    return np.exp(-np.logaddexp(0, -z))


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(
        "relu",
        lambda z: np.maximum(z, 0),
        # At z == 0 the derivative is taken as 0, as TensorFlow does.
        lambda z, a: (z > 0).astype(z.dtype),
    ),
    "tanh": Activation("tanh", np.tanh, lambda z, a: 1 - a * a),
    "sigmoid": Activation("sigmoid", _sigmoid, lambda z, a: a * (1 - a)),
}


def get_activation(name: str) -> Activation:
    """The Activation called name; ValueError naming the allowed ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


@dataclass
class ForwardCache:
    """Every intermediate value of a forward pass that backpropagation needs."""

    hidden_preactivation: np.ndarray  # z1 = x @ hidden_kernel + hidden_bias
    hidden_output: np.ndarray  # h = activation(z1)
    logits: np.ndarray  # z2 = h @ output_kernel + output_bias
    probabilities: np.ndarray  # softmax(z2)


def forward_with_cache(weights: MLPWeights, x: ArrayLike, activation: str = "relu") -> ForwardCache:
    """The forward pass on a batch, keeping the intermediate values for backpropagation."""
    x = validated_inputs(weights, x)
    return forward_pass(weights, x, get_activation(activation))


def forward(weights: MLPWeights, x: ArrayLike, activation: str = "relu") -> np.ndarray:
    """Class probabilities, shape (rows, num_classes), for x of shape (rows, input_dim)."""
    return forward_with_cache(weights, x, activation).probabilities


def predict_proba(
    weights: MLPWeights,
    x: ArrayLike,
    activation: str = "relu",
    batch_size: int = PREDICT_BATCH_SIZE,
) -> np.ndarray:
    """Class probabilities for any number of rows, computed batch_size rows at a time."""
    x = validated_inputs(weights, x)
    require_positive_int("batch_size", batch_size)
    chosen = get_activation(activation)
    probabilities = np.empty((x.shape[0], weights.num_classes), dtype=weights.dtype)
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        probabilities[rows] = forward_pass(weights, x[rows], chosen).probabilities
    return probabilities


def categorical_crossentropy(y_onehot: ArrayLike, probabilities: ArrayLike) -> float:
    """Mean cross-entropy of probabilities, computed as `keras.losses.CategoricalCrossentropy`
    computes it from bare probabilities: renormalised, then clipped to [1e-7, 1 - 1e-7].

    Use it for probabilities alone (e.g. from predict_proba). Training uses the logits; see
    loss_and_gradients for why the two differ only for probabilities beyond the clip.
    """
    probabilities = np.asarray(probabilities)
    y_onehot = np.asarray(y_onehot)
    if probabilities.ndim != 2 or y_onehot.shape != probabilities.shape:
        raise ValueError(
            "y_onehot and probabilities must be 2D arrays of the same shape, "
            f"got y_onehot.shape={y_onehot.shape} and probabilities.shape={probabilities.shape}"
        )
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    clipped = np.clip(probabilities, KERAS_EPSILON, 1 - KERAS_EPSILON)
    return float(np.mean(-np.sum(y_onehot * np.log(clipped), axis=1)))

def forward_pass(weights: MLPWeights, x: np.ndarray, activation: Activation) -> ForwardCache:
    # Computing in the weights' dtype keeps float32 training in fast float32 matmuls.
    x = x.astype(weights.dtype, copy=False)
    hidden_preactivation = x @ weights.hidden_kernel
    hidden_preactivation += weights.hidden_bias
    hidden_output = activation.function(hidden_preactivation)
    logits = hidden_output @ weights.output_kernel
    logits += weights.output_bias
    # Subtracting each row's maximum leaves softmax unchanged and keeps exp from overflowing.
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
    return ForwardCache(hidden_preactivation, hidden_output, logits, probabilities)

def validated_inputs(weights: MLPWeights, x: ArrayLike) -> np.ndarray:
    """x as a floating-point array of shape (rows, input_dim); not copied when it already is."""
    if not isinstance(weights, MLPWeights):
        raise ValueError(f"weights must be MLPWeights, got {type(weights).__name__}")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"x must be 2D (rows, {weights.input_dim}); got x.shape={x.shape}. "
            "Flatten images first, e.g. x.reshape(len(x), -1)"
        )
    if x.shape[1] != weights.input_dim:
        raise ValueError(
            f"x has {x.shape[1]} features per row but the weights expect {weights.input_dim}: "
            f"x.shape={x.shape}, hidden_kernel.shape={weights.hidden_kernel.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"x has no rows: x.shape={x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"x must hold floating-point values (pixels scaled to [0, 1]), got dtype {x.dtype}"
        )
    return x

def require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
