"""The chapter's network as arrays: Dense(width, activation) for each hidden layer, then
Dense(10, softmax); the chapter's own has one hidden layer of 512 relu units.

Its weights (in the layout of `keras.Model.get_weights()`), activations, forward pass,
predictions and loss, in NumPy only: what evaluating and serving a trained model need. Training
it from scratch (backpropagation, dropout, optimizers) builds on this in
mnist_pipeline.scratch.numpy_mlp, so editing the teaching code does not re-run the evaluate stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# Keras' `backend.epsilon()`: how far from 0 and 1 it clips probabilities before taking logs.
KERAS_EPSILON = 1e-7
# Rows per forward pass in predict_proba; bounds memory, does not change the result.
PREDICT_BATCH_SIZE = 1024


def layer_name(index: int) -> str:
    """Keras' name for the index-th Dense layer's weights in a saved model: dense, dense_1..."""
    return "dense" if index == 0 else f"dense_{index}"


@dataclass
class MLPWeights:
    """The kernel and bias of each Dense layer, first to last, shaped as Keras stores them.

    Gradients use the same structure: one array per weight, of the same shape. The chapter's
    names (hidden_kernel, hidden_bias, output_kernel, output_bias) name the first layer's and
    the last layer's arrays, which for its one hidden layer are all four.
    """

    kernels: list[np.ndarray]  # kernels[i]: (inputs of layer i, units of layer i)
    biases: list[np.ndarray]  # biases[i]: (units of layer i,)

    def __post_init__(self) -> None:
        self.kernels, self.biases = list(self.kernels), list(self.biases)
        if not self.kernels or len(self.kernels) != len(self.biases):
            raise ValueError(
                "MLPWeights needs one kernel and one bias per layer, at least one layer; got "
                f"{len(self.kernels)} kernels and {len(self.biases)} biases"
            )
        arrays = self.named_arrays()
        for name, array in arrays.items():
            if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"MLPWeights {name} must be a floating-point NumPy array")
        dtypes = {name: array.dtype for name, array in arrays.items()}
        if len(set(dtypes.values())) != 1:
            raise ValueError(f"MLPWeights arrays must share one dtype, got {dtypes}")
        shapes = {name: array.shape for name, array in arrays.items()}
        if any(kernel.ndim != 2 for kernel in self.kernels):
            raise ValueError(f"MLPWeights kernels must be 2D, got shapes {shapes}")
        fan_in = self.kernels[0].shape[0]
        expected = {}
        for index, kernel in enumerate(self.kernels):
            units = kernel.shape[1]
            expected[f"{layer_name(index)}/kernel"] = (fan_in, units)
            expected[f"{layer_name(index)}/bias"] = (units,)
            fan_in = units
        if shapes != expected:
            raise ValueError(
                f"MLPWeights shapes do not fit together: got {shapes}, expected {expected}"
            )

    @property
    def input_dim(self) -> int:
        return self.kernels[0].shape[0]

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden layers' widths (every layer's but the last)."""
        return tuple(kernel.shape[1] for kernel in self.kernels[:-1])

    @property
    def num_classes(self) -> int:
        return self.kernels[-1].shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.kernels[0].dtype

    # The chapter's names, for its Dense -> Dense network (and the ends of a deeper one).
    hidden_kernel = property(
        lambda self: self.kernels[0], lambda self, value: self.kernels.__setitem__(0, value)
    )
    hidden_bias = property(
        lambda self: self.biases[0], lambda self, value: self.biases.__setitem__(0, value)
    )
    output_kernel = property(
        lambda self: self.kernels[-1], lambda self, value: self.kernels.__setitem__(-1, value)
    )
    output_bias = property(
        lambda self: self.biases[-1], lambda self, value: self.biases.__setitem__(-1, value)
    )

    def named_arrays(self) -> dict[str, np.ndarray]:
        """The arrays by Keras' names (dense/kernel, dense/bias, dense_1/kernel...), in order."""
        named = {}
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            named[f"{layer_name(index)}/kernel"] = kernel
            named[f"{layer_name(index)}/bias"] = bias
        return named

    def as_keras_list(self) -> list[np.ndarray]:
        """[kernel, bias] of each layer in turn, as `get_weights()` lists them."""
        return list(self.named_arrays().values())

    @classmethod
    def from_keras_list(cls, arrays: Sequence[ArrayLike]) -> MLPWeights:
        """The inverse of as_keras_list, e.g. from `model.get_weights()`; copies the arrays."""
        if len(arrays) < 2 or len(arrays) % 2:
            raise ValueError(
                "expected [kernel, bias] for each layer, an even number of arrays, got "
                f"{len(arrays)}"
            )
        copies = [np.array(array) for array in arrays]
        return cls(kernels=copies[0::2], biases=copies[1::2])

    def copy(self) -> MLPWeights:
        return MLPWeights.from_keras_list(self.as_keras_list())


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


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, as Keras computes it."""
    # Subtracting each row's maximum leaves softmax unchanged and keeps exp from overflowing.
    exponentials = np.exp(z - z.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


# Every activation a saved Dense layer may name that scoring computes in NumPy, by Keras'
# name: the hidden ones above, and softmax and linear (no activation) too.
LAYER_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{name: activation.function for name, activation in ACTIVATIONS.items()},
    "softmax": softmax,
    "linear": lambda z: z,
}


@dataclass
class ForwardCache:
    """Every intermediate value of a forward pass that backpropagation needs, one entry per
    hidden layer. The chapter's names (hidden_preactivation, hidden_output) are the last
    hidden layer's values, the ones its one hidden layer has."""

    layer_inputs: list[np.ndarray]  # what each layer multiplies: x, then each hidden output
    preactivations: list[np.ndarray]  # z = layer_input @ kernel + bias, per hidden layer
    activations: list[np.ndarray]  # a = activation(z), before dropout
    # Inverted dropout's masks: 0 for a dropped unit, 1 / (1 - rate) for a kept one; empty
    # when there is no dropout.
    dropout_masks: list[np.ndarray]
    logits: np.ndarray  # the output layer's z
    probabilities: np.ndarray  # softmax(logits)

    @property
    def hidden_preactivation(self) -> np.ndarray:
        return self.preactivations[-1]

    @property
    def hidden_output(self) -> np.ndarray:
        return self.activations[-1]


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
    activation: str | Sequence[str] = "relu",
    batch_size: int = PREDICT_BATCH_SIZE,
) -> np.ndarray:
    """The network's outputs for any number of rows, computed batch_size rows at a time.

    activation is the hidden layers' activation (the output layer's is softmax), or a list
    with one name of LAYER_FUNCTIONS per layer, as a saved model names them.
    """
    x = validated_inputs(weights, x)
    require_positive_int("batch_size", batch_size)
    if isinstance(activation, str):
        chosen = get_activation(activation)

        def outputs(rows: np.ndarray) -> np.ndarray:
            return forward_pass(weights, rows, chosen).probabilities
    else:
        functions = layer_functions(activation, len(weights.kernels))

        def outputs(rows: np.ndarray) -> np.ndarray:
            return stack_forward(weights, rows, functions)

    probabilities = np.empty((x.shape[0], weights.num_classes), dtype=weights.dtype)
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        probabilities[rows] = outputs(x[rows])
    return probabilities


def layer_functions(names: Sequence[str], layers: int) -> list[Callable[[np.ndarray], np.ndarray]]:
    """The LAYER_FUNCTIONS of names, one per layer; ValueError naming the allowed ones."""
    names = list(names)
    if len(names) != layers:
        raise ValueError(f"expected one activation per layer ({layers}), got {names}")
    unknown = [name for name in names if name not in LAYER_FUNCTIONS]
    if unknown:
        raise ValueError(
            f"unknown activation {unknown[0]!r}; allowed: {', '.join(sorted(LAYER_FUNCTIONS))}"
        )
    return [LAYER_FUNCTIONS[name] for name in names]


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


def forward_pass(
    weights: MLPWeights,
    x: np.ndarray,
    activation: Activation,
    dropout_masks: Sequence[np.ndarray] = (),
) -> ForwardCache:
    """Dense(activation) for every hidden layer, each output multiplied by its dropout mask
    when masks are given (training), then Dense(softmax)."""
    # Computing in the weights' dtype keeps float32 training in fast float32 matmuls.
    layer_input = x.astype(weights.dtype, copy=False)
    layer_inputs, preactivations, activations = [], [], []
    for index, (kernel, bias) in enumerate(
        zip(weights.kernels[:-1], weights.biases[:-1], strict=True)
    ):
        layer_inputs.append(layer_input)
        preactivation = layer_input @ kernel
        preactivation += bias
        output = activation.function(preactivation)
        preactivations.append(preactivation)
        activations.append(output)
        layer_input = output * dropout_masks[index] if dropout_masks else output
    layer_inputs.append(layer_input)
    logits = layer_input @ weights.output_kernel
    logits += weights.output_bias
    probabilities = softmax(logits)
    return ForwardCache(
        layer_inputs, preactivations, activations, list(dropout_masks), logits, probabilities
    )


def stack_forward(
    weights: MLPWeights, x: np.ndarray, functions: Sequence[Callable[[np.ndarray], np.ndarray]]
) -> np.ndarray:
    """Any stack of Dense layers, each with its own activation function (inference only)."""
    output = x.astype(weights.dtype, copy=False)
    for kernel, bias, function in zip(weights.kernels, weights.biases, functions, strict=True):
        preactivation = output @ kernel
        preactivation += bias
        output = function(preactivation)
    return output


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
            f"x.shape={x.shape}, first kernel's shape={weights.hidden_kernel.shape}"
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
