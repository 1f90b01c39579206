"""The chapter's network, or a deeper one, trained from scratch in NumPy: backpropagation by
the chain rule through any number of Dense layers, inverted dropout, the update rules
(full-batch gradient descent, and Keras 3's SGD with momentum and Nesterov, RMSprop and Adam,
each written out as formulas) and a training loop, on the weights, activations and forward
pass of mnist_pipeline.modelling.mlp. A Keras model of the same shape (Dropout layers have no
weights) takes the weights with `model.set_weights(weights.as_keras_list())`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from mnist_pipeline.data.mnist import NUM_CLASSES
from mnist_pipeline.modelling.mlp import (
    Activation,
    MLPWeights,
    forward_pass,
    get_activation,
    require_positive_int,
    validated_inputs,
)

logger = logging.getLogger(__name__)
# Dropout's masks come from np.random.default_rng([seed, DROPOUT_STREAM]): the seed's own
# generator keeps drawing exactly the shuffles it drew before dropout existed.
DROPOUT_STREAM = 1


def init_weights(
    rng: np.random.Generator,
    input_dim: int,
    hidden_units: int | Sequence[int],
    num_classes: int = NUM_CLASSES,
    dtype: DTypeLike = np.float32,
) -> MLPWeights:
    """Glorot-uniform kernels and zero biases, the defaults of `keras.layers.Dense`: one hidden
    layer per width in hidden_units (an int is one layer), then the output layer. The kernels
    are drawn first layer first, so one width draws what the chapter's network always drew."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a np.random.Generator, e.g. np.random.default_rng(seed), got {rng!r}"
        )
    widths = [hidden_units] if isinstance(hidden_units, int | np.integer) else list(hidden_units)
    if not widths:
        raise ValueError("hidden_units must be a positive integer or a non-empty list of them")
    for name, value in [
        ("input_dim", input_dim),
        *(("hidden_units", width) for width in widths),
        ("num_classes", num_classes),
    ]:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype must be a floating-point type, got {np.dtype(dtype)}")

    def glorot_uniform(fan_in: int, fan_out: int) -> np.ndarray:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)

    sizes = [input_dim, *widths, num_classes]
    return MLPWeights(
        kernels=[
            glorot_uniform(fan_in, fan_out)
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        ],
        biases=[np.zeros(fan_out, dtype=dtype) for fan_out in sizes[1:]],
    )


def dropout_masks(
    rng: np.random.Generator, rows: int, widths: Sequence[int], rate: float, dtype: DTypeLike
) -> list[np.ndarray]:
    """Inverted dropout's masks, one (rows, width) array per hidden layer: each unit is
    dropped (0) with probability rate, otherwise kept and scaled by 1 / (1 - rate), so a unit's
    expected output is the same as without dropout and inference needs no rescaling. No masks
    at rate 0."""
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    if rate == 0:
        return []
    scale = np.asarray(1 / (1 - rate), dtype=dtype)
    return [(rng.random((rows, width)) >= rate) * scale for width in widths]


def loss_and_gradients(
    weights: MLPWeights,
    x: ArrayLike,
    y_onehot: ArrayLike,
    activation: str = "relu",
    masks: Sequence[np.ndarray] = (),
) -> tuple[float, MLPWeights]:
    """Mean categorical cross-entropy of the batch, and its gradient for every weight.

    The loss is computed from the logits, with no clipping. That is what Keras itself does
    for this network in float32: a softmax layer's output carries its logits
    (`_keras_logits`), and Keras' cross-entropy then uses
    `tf.nn.softmax_cross_entropy_with_logits`, in `fit`, `evaluate` and eager calls alike.
    Keras clips at 1e-7 only when it gets bare probabilities (see categorical_crossentropy),
    which also happens when the loss casts the output to another dtype (a float64 model with
    the default float32 loss). Both agree unless a probability leaves [1e-7, 1 - 1e-7];
    there the clipped loss is flat, its gradient 0, and a confidently wrong example would
    stop teaching the network anything. The gradient returned is the exact gradient of the
    unclipped loss, as Keras computes it.

    masks, from dropout_masks, are the dropout of a training step: each hidden layer's output
    is multiplied by its mask, and so is the gradient flowing back through it.
    """
    x = validated_inputs(weights, x)
    y_onehot = _validated_labels(weights, y_onehot, x.shape[0])
    expected = [(x.shape[0], width) for width in weights.widths]
    if masks and [mask.shape for mask in masks] != expected:
        raise ValueError(
            f"masks must have shapes {expected} (one per hidden layer), got "
            f"{[mask.shape for mask in masks]}"
        )
    loss, gradients, _ = _loss_and_gradients(
        weights, x, y_onehot, get_activation(activation), masks
    )
    return loss, gradients


def _loss_and_gradients(
    weights: MLPWeights,
    x: np.ndarray,
    y_onehot: np.ndarray,
    activation: Activation,
    masks: Sequence[np.ndarray] = (),
) -> tuple[float, MLPWeights, np.ndarray]:
    """Loss, gradients and probabilities of one batch; the inputs are already validated."""
    x = x.astype(weights.dtype, copy=False)
    cache = forward_pass(weights, x, activation, masks)
    batch_size = x.shape[0]

    loss = _mean_cross_entropy(cache.logits, y_onehot)

    # Backpropagation: the chain rule applied from the loss back to each weight, one layer at
    # a time from the output. For softmax followed by cross-entropy the product of their
    # derivatives collapses to (p - y), and the mean over the batch contributes 1 / batch_size.
    layers = len(weights.kernels)
    kernel_gradients: list[np.ndarray] = [None] * layers  # type: ignore[list-item]
    bias_gradients: list[np.ndarray] = [None] * layers  # type: ignore[list-item]
    preactivation_gradient = (cache.probabilities - y_onehot) / batch_size
    for index in reversed(range(layers)):
        # z = layer_input @ kernel + bias: the kernel's gradient pairs every input with every
        # unit's gradient, summed over the batch; the bias's is the unit's gradient summed.
        kernel_gradients[index] = cache.layer_inputs[index].T @ preactivation_gradient
        bias_gradients[index] = preactivation_gradient.sum(axis=0)
        if index == 0:
            break
        # Each unit below feeds every unit of this layer, so its gradient sums over them
        # through the kernel; dropout's mask passes the gradient of kept units only, scaled.
        output_gradient = preactivation_gradient @ weights.kernels[index].T
        if masks:
            output_gradient *= masks[index - 1]
        preactivation_gradient = output_gradient * activation.derivative(
            cache.preactivations[index - 1], cache.activations[index - 1]
        )

    gradients = MLPWeights(kernels=kernel_gradients, biases=bias_gradients)
    return loss, gradients, cache.probabilities


def _mean_cross_entropy(logits: np.ndarray, y_onehot: np.ndarray) -> float:
    """Mean categorical cross-entropy over the rows, from the logits (as Keras computes it for
    a softmax output layer; see loss_and_gradients)."""
    # log softmax(z) = z - max - log(sum(exp(z - max))), which never takes log(0).
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.sum(y_onehot * log_probabilities) / logits.shape[0])


# Rows scored at a time by evaluate: bounds the hidden activations held, not the result.
EVALUATE_ROWS = 2048


def evaluate(
    weights: MLPWeights, x: ArrayLike, y_onehot: ArrayLike, activation: str = "relu"
) -> dict[str, float]:
    """The network's loss and accuracy on x in inference mode (no dropout), as Keras'
    `evaluate` reports them: the mean cross-entropy over all rows, from the logits, and the
    fraction of rows whose most probable class is the labelled one."""
    chosen = get_activation(activation)
    x = validated_inputs(weights, x)
    y_onehot = _validated_labels(weights, y_onehot, x.shape[0])
    loss_total, correct = 0.0, 0
    for start in range(0, x.shape[0], EVALUATE_ROWS):
        rows = slice(start, start + EVALUATE_ROWS)
        logits = forward_pass(weights, x[rows], chosen).logits
        loss_total += _mean_cross_entropy(logits, y_onehot[rows]) * logits.shape[0]
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y_onehot[rows].argmax(axis=1)))
    return {"loss": loss_total / x.shape[0], "accuracy": correct / x.shape[0]}


def chapter_naive_gradient(layer_input: ArrayLike, y_onehot: ArrayLike) -> np.ndarray:
    """The "gradient" of the chapter's `naive_backpropagation` sketch: layer_input.T @ y.

    It is not a gradient of the loss. It never looks at the network's prediction, so it is
    the same whatever the weights are and does not vanish when the network is right; the
    true gradient of a softmax layer is layer_input.T @ (p - y) / batch. Because it lacks
    the -p term, subtracting it lowers the correct class's logit for non-negative inputs
    (such as relu outputs): the wrong way.
    """
    layer_input = np.asarray(layer_input)
    y_onehot = np.asarray(y_onehot)
    if layer_input.ndim != 2 or y_onehot.ndim != 2 or layer_input.shape[0] != y_onehot.shape[0]:
        raise ValueError(
            "layer_input and y_onehot must be 2D with one row per example, got "
            f"layer_input.shape={layer_input.shape} and y_onehot.shape={y_onehot.shape}"
        )
    return layer_input.T @ y_onehot


def chapter_naive_backpropagation(x: ArrayLike, y: ArrayLike, learning_rate: float) -> np.ndarray:
    """What the chapter's sketch computes: x - learning_rate * (x.T @ y).

    Kept to show its flaws. Besides the wrong "gradient" (see chapter_naive_gradient) it
    updates the input x, not any weight, so it only runs when x.T @ y happens to have x's
    shape. Unlike the sketch, which subtracts in place, this returns a new array.
    """
    x = np.asarray(x)
    naive_gradient = chapter_naive_gradient(x, y)
    if naive_gradient.shape != x.shape:
        raise ValueError(
            f"the chapter's sketch subtracts x.T @ y (shape {naive_gradient.shape}) from x "
            f"(shape {x.shape}); the shapes only match by accident, because it updates the "
            "data instead of the weights"
        )
    return x - learning_rate * naive_gradient


class Optimizer(Protocol):
    """An update rule; full_batch says whether train gives it one step on all the data."""

    full_batch: bool

    def apply(self, weights: MLPWeights, gradients: MLPWeights) -> None: ...


class GradientDescent:
    """Full-batch gradient descent: weight -= learning_rate * gradient of the whole training loss.

    train takes one step per epoch with it, on all training rows at once (batch_size unused).
    """

    full_batch = True

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = _require_positive_float("learning_rate", learning_rate)

    def apply(self, weights: MLPWeights, gradients: MLPWeights) -> None:
        """Updates weights in place."""
        named_gradients = gradients.named_arrays()
        for name, weight in weights.named_arrays().items():
            weight -= self.learning_rate * named_gradients[name]


class MiniBatchSGD(GradientDescent):
    """Mini-batch stochastic gradient descent: the same update as GradientDescent, but train
    takes one step per shuffled batch of batch_size rows, on that batch's gradient only."""

    full_batch = False


def _keras_learning_rate(value: object) -> float:
    # Keras keeps the learning rate in a float32 variable (its floatx), even for float64
    # weights; rounding it the same way lets float64 runs match Keras to the last bit.
    return float(np.float32(_require_positive_float("learning_rate", value)))


def _keras_cast(value: float, dtype: type) -> np.floating:
    """What Keras' `ops.cast(value, dtype)` makes of a Python float: a float32 tensor first (its
    floatx), then dtype, so a float64 network sees the float32 rounding of the value."""
    return dtype(np.float32(value))


def _require_rate(name: str, value: object) -> float:
    value = _require_number(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


class _KerasOptimizer:
    """What Keras' optimizers share: per-weight state, built on the first step for the
    network it is given (as Keras' optimizer.build() does), and a step counter."""

    full_batch = False
    iterations: int

    def _build(self, name: str, weight: np.ndarray) -> None:
        raise NotImplementedError

    def _update(self, name: str, weight: np.ndarray, gradient: np.ndarray) -> None:
        raise NotImplementedError

    def apply(self, weights: MLPWeights, gradients: MLPWeights) -> None:
        """Updates weights in place and advances the optimizer's state by one step."""
        named_weights = weights.named_arrays()
        shapes = {name: weight.shape for name, weight in named_weights.items()}
        if not self.iterations:
            self._shapes = shapes
            for name, weight in named_weights.items():
                self._build(name, weight)
        if shapes != self._shapes:
            raise ValueError(
                f"this {type(self).__name__} was built for weights of shapes {self._shapes}, "
                f"got {shapes}; use a new {type(self).__name__} for a different network"
            )
        named_gradients = gradients.named_arrays()
        for name, weight in named_weights.items():
            self._update(name, weight, named_gradients[name])
        self.iterations += 1


class SGD(_KerasOptimizer):
    """Keras 3's `keras.optimizers.SGD`, update for update: the chapter's update, on each
    shuffled batch, with momentum and Nesterov's variant optional.

    momentum == 0: weight -= learning_rate * gradient
    otherwise: velocity = momentum * velocity - learning_rate * gradient
      plain: weight += velocity
      nesterov: weight += momentum * velocity - learning_rate * gradient (a look-ahead step)
    """

    def __init__(
        self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False
    ) -> None:
        self.learning_rate = _keras_learning_rate(learning_rate)
        self.momentum = _require_rate("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.iterations = 0
        self._velocities: dict[str, np.ndarray] = {}

    def _build(self, name: str, weight: np.ndarray) -> None:
        if self.momentum != 0:
            self._velocities[name] = np.zeros_like(weight)

    def _update(self, name: str, weight: np.ndarray, gradient: np.ndarray) -> None:
        # The expressions follow keras/src/optimizers/sgd.py operation by operation, so that
        # the floating-point rounding is the same too.
        if self.momentum == 0:
            weight -= gradient * self.learning_rate
            return
        momentum = _keras_cast(self.momentum, weight.dtype.type)
        velocity = self._velocities[name]
        velocity[...] = velocity * momentum - gradient * self.learning_rate
        if self.nesterov:
            weight += velocity * momentum - gradient * self.learning_rate
        else:
            weight += velocity


class Adam(_KerasOptimizer):
    """Keras 3's `keras.optimizers.Adam`, update for update.

    t = step number, from 1
    m = m + (gradient - m) * (1 - beta_1)        (a running mean of the gradients)
    v = v + (gradient**2 - v) * (1 - beta_2)     (and of their squares)
    amsgrad: v_hat = max(v_hat, v), used for v below
    alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)   (the bias correction)
    weight -= m * alpha / (sqrt(v) + epsilon)
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
    ) -> None:
        self.learning_rate = _keras_learning_rate(learning_rate)
        self.beta_1 = _require_rate("beta_1", beta_1)
        self.beta_2 = _require_rate("beta_2", beta_2)
        self.epsilon = _require_positive_float("epsilon", epsilon)
        self.amsgrad = bool(amsgrad)
        self.iterations = 0
        self._momentums: dict[str, np.ndarray] = {}
        self._velocities: dict[str, np.ndarray] = {}
        self._velocity_hats: dict[str, np.ndarray] = {}

    def _build(self, name: str, weight: np.ndarray) -> None:
        self._momentums[name] = np.zeros_like(weight)
        self._velocities[name] = np.zeros_like(weight)
        if self.amsgrad:
            self._velocity_hats[name] = np.zeros_like(weight)

    def _update(self, name: str, weight: np.ndarray, gradient: np.ndarray) -> None:
        # The expressions follow keras/src/optimizers/adam.py operation by operation, in the
        # weight's dtype, so that the floating-point rounding is the same too.
        dtype = weight.dtype.type
        step = dtype(self.iterations + 1)
        beta_1_power = np.power(_keras_cast(self.beta_1, dtype), step)
        beta_2_power = np.power(_keras_cast(self.beta_2, dtype), step)
        alpha = dtype(self.learning_rate) * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        momentum, velocity = self._momentums[name], self._velocities[name]
        momentum += (gradient - momentum) * (1 - self.beta_1)
        velocity += (np.square(gradient) - velocity) * (1 - self.beta_2)
        if self.amsgrad:
            velocity_hat = self._velocity_hats[name]
            np.maximum(velocity_hat, velocity, out=velocity_hat)
            velocity = velocity_hat
        weight -= (momentum * alpha) / (np.sqrt(velocity) + self.epsilon)


class RMSprop(_KerasOptimizer):
    """Keras 3's `keras.optimizers.RMSprop`, update for update (momentum and centered too).

    velocity = rho * velocity + (1 - rho) * gradient**2
    centered: average = rho * average + (1 - rho) * gradient, and velocity - average**2 below
    increment = learning_rate * gradient / sqrt(velocity + epsilon)
    momentum > 0: buffer = momentum * buffer + increment; weight -= buffer
    otherwise: weight -= increment
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
    ) -> None:
        self.learning_rate = _keras_learning_rate(learning_rate)
        self.rho = _require_number("rho", rho)
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {rho!r}")
        self.momentum = _require_number("momentum", momentum)
        if not self.momentum >= 0:
            raise ValueError(f"momentum must be >= 0, got {momentum!r}")
        self.epsilon = _require_positive_float("epsilon", epsilon)
        self.centered = bool(centered)
        self.iterations = 0
        # Per-weight state, created on the first step like Keras' optimizer.build().
        self._velocities: dict[str, np.ndarray] = {}
        self._momentums: dict[str, np.ndarray] = {}
        self._average_gradients: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}
        self._increments: dict[str, np.ndarray] = {}

    def _build(self, name: str, weight: np.ndarray) -> None:
        self._velocities[name] = np.zeros_like(weight)
        self._scratch[name] = np.empty_like(weight)
        self._increments[name] = np.empty_like(weight)
        if self.momentum > 0:
            self._momentums[name] = np.zeros_like(weight)
        if self.centered:
            self._average_gradients[name] = np.zeros_like(weight)

    def _update(self, name: str, weight: np.ndarray, gradient: np.ndarray) -> None:
        # The expressions follow keras/src/optimizers/rmsprop.py operation by operation, so
        # that the floating-point rounding is the same too.
        # In place, through two scratch arrays per weight: the same operations in the same
        # order, so the same bits, without a new array per operation.
        rho = self.rho
        velocity = self._velocities[name]
        scratch = self._scratch[name]
        velocity *= rho
        np.square(gradient, out=scratch)
        scratch *= 1 - rho
        velocity += scratch
        if self.centered:
            average_gradient = self._average_gradients[name]
            average_gradient *= rho
            np.multiply(gradient, 1 - rho, out=scratch)
            average_gradient += scratch
            np.square(average_gradient, out=scratch)
            np.subtract(velocity, scratch, out=scratch)
            scratch += self.epsilon
        else:
            np.add(velocity, self.epsilon, out=scratch)
        np.sqrt(scratch, out=scratch)
        increment = np.multiply(gradient, self.learning_rate, out=self._increments[name])
        increment /= scratch
        if self.momentum > 0:
            buffer = self._momentums[name]
            buffer *= self.momentum
            buffer += increment
            weight -= buffer
        else:
            weight -= increment


# By name: params.yaml's train.optimizer.name picks sgd, rmsprop or adam (with Keras' settings);
# the first two are the chapter's plain rules, for teaching.
OPTIMIZERS: dict[str, type] = {
    "gradient_descent": GradientDescent,
    "mini_batch_sgd": MiniBatchSGD,
    "sgd": SGD,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name: str, **options: float | bool) -> Optimizer:
    """An optimizer by name (a key of OPTIMIZERS), e.g. from params; options go to its class."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[name](**options)
    except TypeError as error:
        raise ValueError(f"bad options for optimizer {name!r}: {error}") from None


def train(
    weights: MLPWeights,
    x: ArrayLike,
    y_onehot: ArrayLike,
    *,
    epochs: int,
    batch_size: int,
    optimizer: Optimizer,
    seed: int,
    activation: str = "relu",
    dropout: float = 0.0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, list[float]]:
    """Trains weights in place; returns the per-epoch history {"loss": [...], "accuracy": [...]}.

    Each epoch reports, like Keras' fit, the mean over its batches (weighted by batch size)
    of the loss and accuracy measured on each batch just before its update. Batches come
    from a fresh shuffle per epoch drawn from `np.random.default_rng(seed)`, so the same
    seed, data and starting weights give identical weights. With dropout > 0, each batch
    drops hidden units by fresh masks (dropout_masks) from a second generator of the same seed,
    so the shuffle does not depend on the rate; the reported loss and accuracy are those of
    the network with dropout, as Keras' are. on_epoch_end(epoch, logs) is called after each
    epoch with a 0-based epoch index, as Keras callbacks are.
    """
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not callable(getattr(optimizer, "apply", None)):
        raise ValueError(
            f"optimizer must have an apply(weights, gradients) method, got {optimizer!r}"
        )
    chosen = get_activation(activation)
    x = validated_inputs(weights, x)
    y_onehot = _validated_labels(weights, y_onehot, x.shape[0])
    dropout = _require_rate("dropout", dropout)
    full_batch = bool(getattr(optimizer, "full_batch", False))
    if full_batch:
        logger.info("full-batch gradient descent: one step per epoch, batch_size is not used")

    rng = np.random.default_rng(seed)
    dropout_rng = np.random.default_rng([seed, DROPOUT_STREAM])
    labels = y_onehot.argmax(axis=1)
    number_of_rows = x.shape[0]
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for epoch in range(epochs):
        if full_batch:
            # Gradient descent: one step on the exact gradient of the loss over all the data.
            # The order of the rows does not change that gradient, so there is no shuffle.
            batches: list[slice | np.ndarray] = [slice(None)]
        else:
            # Stochastic gradient descent: many cheap steps, each on the gradient of one
            # random batch, an unbiased but noisy estimate of the full gradient.
            order = rng.permutation(number_of_rows)
            batches = [
                order[start : start + batch_size] for start in range(0, number_of_rows, batch_size)
            ]
        loss_total = 0.0
        correct = 0
        for rows in batches:
            x_batch = x[rows].astype(weights.dtype, copy=False)
            y_batch = y_onehot[rows]
            masks = dropout_masks(
                dropout_rng, x_batch.shape[0], weights.widths, dropout, weights.dtype
            )
            loss, gradients, probabilities = _loss_and_gradients(
                weights, x_batch, y_batch, chosen, masks
            )
            optimizer.apply(weights, gradients)
            loss_total += loss * x_batch.shape[0]
            correct += int(np.count_nonzero(probabilities.argmax(axis=1) == labels[rows]))
        logs = {"loss": loss_total / number_of_rows, "accuracy": correct / number_of_rows}
        history["loss"].append(logs["loss"])
        history["accuracy"].append(logs["accuracy"])
        logger.info(
            "epoch %d/%d: loss %.4f, accuracy %.4f",
            epoch + 1,
            epochs,
            logs["loss"],
            logs["accuracy"],
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, dict(logs))
    return history


def _validated_labels(weights: MLPWeights, y_onehot: ArrayLike, rows: int) -> np.ndarray:
    """y_onehot as an array of weights.dtype after checking that it is one-hot and fits x."""
    y_onehot = np.asarray(y_onehot)
    expected = (rows, weights.num_classes)
    if y_onehot.shape != expected:
        raise ValueError(
            f"y_onehot must have shape {expected} (one one-hot row of width "
            f"{weights.num_classes} per row of x), got y_onehot.shape={y_onehot.shape}. "
            "Integer labels need keras.utils.to_categorical first"
        )
    is_binary = np.all((y_onehot == 0) | (y_onehot == 1))
    if not (is_binary and np.all(y_onehot.sum(axis=1) == 1)):
        raise ValueError("y_onehot must be one-hot: every row all zeros except a single 1")
    return y_onehot.astype(weights.dtype, copy=False)


def _require_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _require_positive_float(name: str, value: object) -> float:
    value = _require_number(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
