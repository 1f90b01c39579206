"""The portable trainer (`train.framework: numpy`): mlp.py's network trained by backpropagation
with inverted dropout and Keras 3's optimizers update for update (docs/math.md has the math)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mnist_pipeline.data.mnist import NUM_CLASSES
from mnist_pipeline.modelling.mlp import ACTIVATIONS, softmax
from mnist_pipeline.params import OptimizerParams, TrainParams
from mnist_pipeline.runtime import portable

log = logging.getLogger(__name__)
# Dropout's masks come from np.random.default_rng([seed, DROPOUT_STREAM]): the seed's own
# generator keeps drawing exactly the shuffles it drew before dropout existed.
DROPOUT_STREAM = 1
# Rows scored at a time by evaluate: bounds the hidden activations held, not the result.
EVALUATE_ROWS = 2048
# Each hidden activation's derivative from its input z and output a (relu's is 0 at z == 0, as
# TensorFlow's).
DERIVATIVES = {
    "relu": lambda z, a: (z > 0).astype(z.dtype),
    "tanh": lambda z, a: 1 - a * a,
    "sigmoid": lambda z, a: a * (1 - a),
}


def init_weights(
    rng: np.random.Generator, input_dim: int, widths: Sequence[int], dtype=np.float32
) -> list[np.ndarray]:
    """`keras.layers.Dense`'s Glorot-uniform kernels and zero biases, [kernel, bias] per layer."""
    sizes = [input_dim, *widths, NUM_CLASSES]
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)
        weights += [kernel, np.zeros(fan_out, dtype=dtype)]
    return weights


def dropout_masks(
    rng: np.random.Generator, rows: int, widths: Sequence[int], rate: float, dtype
) -> list[np.ndarray]:
    """Inverted dropout's masks, one (rows, width) array per hidden layer: 0 with probability
    rate, else 1 / (1 - rate), so inference needs no rescaling; none at rate 0."""
    if rate == 0:
        return []
    scale = np.asarray(1 / (1 - rate), dtype=dtype)
    return [(rng.random((rows, width)) >= rate) * scale for width in widths]


class Forward(NamedTuple):
    """What backpropagation needs of a forward pass."""

    layer_inputs: list[np.ndarray]  # what each layer multiplies: x, then each hidden output
    preactivations: list[np.ndarray]  # z = layer_input @ kernel + bias, per hidden layer
    activations: list[np.ndarray]  # activation(z), before dropout
    logits: np.ndarray  # the output layer's z


def forward_pass(
    weights: Sequence[np.ndarray], x: np.ndarray, activation: str, masks: Sequence = ()
) -> Forward:
    """The hidden layers, each output times its dropout mask when given, then the logits."""
    kernels, biases = weights[0::2], weights[1::2]
    result = Forward([x.astype(kernels[0].dtype, copy=False)], [], [], None)
    for index, (kernel, bias) in enumerate(zip(kernels[:-1], biases[:-1], strict=True)):
        preactivation = result.layer_inputs[-1] @ kernel
        preactivation += bias
        output = ACTIVATIONS[activation](preactivation)
        result.preactivations.append(preactivation)
        result.activations.append(output)
        result.layer_inputs.append(output * masks[index] if masks else output)
    logits = result.layer_inputs[-1] @ kernels[-1]
    logits += biases[-1]
    return result._replace(logits=logits)


def mean_cross_entropy(logits: np.ndarray, y_onehot: np.ndarray) -> float:
    """Mean categorical cross-entropy from the logits, unclipped: what Keras computes for a
    softmax output in float32 (it clips only bare probabilities: mlp.categorical_crossentropy)."""
    # log softmax(z) = z - max - log(sum(exp(z - max))), which never takes log(0).
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.sum(y_onehot * log_probabilities) / logits.shape[0])


def loss_and_gradients(
    weights: Sequence[np.ndarray],
    x: np.ndarray,
    y_onehot: np.ndarray,
    activation: str = "relu",
    masks: Sequence[np.ndarray] = (),
) -> tuple[float, list[np.ndarray], np.ndarray]:
    """The batch's mean cross-entropy, its gradient for every weight ([kernel, bias] per layer)
    and the predicted probabilities; with masks (dropout_masks), those of a dropout step."""
    cache = forward_pass(weights, x, activation, masks)
    probabilities = softmax(cache.logits)
    # Backpropagation, from the output layer down. Softmax then cross-entropy differentiate
    # together to (p - y); the batch mean contributes 1 / rows.
    preactivation_gradient = (probabilities - y_onehot) / x.shape[0]
    layers = len(weights) // 2
    gradients: list[np.ndarray] = [None] * len(weights)  # type: ignore[list-item]
    for index in reversed(range(layers)):
        # z = layer_input @ kernel + bias: batch sums of input times gradient, and of gradient.
        gradients[2 * index] = cache.layer_inputs[index].T @ preactivation_gradient
        gradients[2 * index + 1] = preactivation_gradient.sum(axis=0)
        if index == 0:
            break
        # Back through the kernel, the dropout mask and the activation of the layer below.
        output_gradient = preactivation_gradient @ weights[2 * index].T
        if masks:
            output_gradient *= masks[index - 1]
        preactivation_gradient = output_gradient * DERIVATIVES[activation](
            cache.preactivations[index - 1], cache.activations[index - 1]
        )
    return mean_cross_entropy(cache.logits, y_onehot), gradients, probabilities


def evaluate(
    weights: Sequence[np.ndarray], x: np.ndarray, y_onehot: np.ndarray, activation: str
) -> dict[str, float]:
    """Loss and accuracy in inference mode (no dropout), as Keras' `evaluate` reports them."""
    loss_total, correct = 0.0, 0
    for start in range(0, len(x), EVALUATE_ROWS):
        rows = slice(start, start + EVALUATE_ROWS)
        logits = forward_pass(weights, x[rows], activation).logits
        loss_total += mean_cross_entropy(logits, y_onehot[rows]) * len(logits)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y_onehot[rows].argmax(axis=1)))
    return {"loss": loss_total / len(x), "accuracy": correct / len(x)}


def keras_float(value: float, dtype=np.float32) -> np.floating:
    """A Python float hyperparameter as Keras has it: a float32 (its floatx), then the dtype."""
    return dtype(np.float32(value))


class SGD:
    """`keras.optimizers.SGD`, keras/src/optimizers/sgd.py's operations in its order, so that the
    rounding is the same too."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False) -> None:
        self.learning_rate = float(np.float32(learning_rate))
        self.momentum, self.nesterov = momentum, nesterov
        self.velocities: list[np.ndarray] = []

    def apply(self, weights: list[np.ndarray], gradients: list[np.ndarray]) -> None:
        if self.momentum and not self.velocities:
            self.velocities = [np.zeros_like(weight) for weight in weights]
        for index, (weight, gradient) in enumerate(zip(weights, gradients, strict=True)):
            if not self.momentum:
                weight -= gradient * self.learning_rate
                continue
            momentum = keras_float(self.momentum, weight.dtype.type)
            velocity = self.velocities[index]
            velocity[...] = velocity * momentum - gradient * self.learning_rate
            if self.nesterov:
                weight += velocity * momentum - gradient * self.learning_rate
            else:
                weight += velocity


class RMSprop:
    """`keras.optimizers.RMSprop`, update for update."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
        self.learning_rate = float(np.float32(learning_rate))
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        self.state: list[dict[str, np.ndarray]] = []

    def apply(self, weights: list[np.ndarray], gradients: list[np.ndarray]) -> None:
        if not self.state:
            self.state = [
                {name: np.zeros_like(weight) for name in ("velocity", "average", "buffer")}
                | {"scratch": np.empty_like(weight), "increment": np.empty_like(weight)}
                for weight in weights
            ]
        rho = self.rho
        # keras/src/optimizers/rmsprop.py's operations in its order, in place through two
        # scratch arrays per weight: the same bits without a new array per operation.
        for state, weight, gradient in zip(self.state, weights, gradients, strict=True):
            velocity, scratch = state["velocity"], state["scratch"]
            velocity *= rho
            np.square(gradient, out=scratch)
            scratch *= 1 - rho
            velocity += scratch
            if self.centered:
                average = state["average"]
                average *= rho
                np.multiply(gradient, 1 - rho, out=scratch)
                average += scratch
                np.square(average, out=scratch)
                np.subtract(velocity, scratch, out=scratch)
                scratch += self.epsilon
            else:
                np.add(velocity, self.epsilon, out=scratch)
            np.sqrt(scratch, out=scratch)
            increment = np.multiply(gradient, self.learning_rate, out=state["increment"])
            increment /= scratch
            if self.momentum > 0:
                buffer = state["buffer"]
                buffer *= self.momentum
                buffer += increment
                increment = buffer
            weight -= increment


class Adam:
    """`keras.optimizers.Adam`, update for update."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
        self.learning_rate = float(np.float32(learning_rate))
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.iterations = 0
        self.state: list[dict[str, np.ndarray]] = []

    def apply(self, weights: list[np.ndarray], gradients: list[np.ndarray]) -> None:
        if not self.state:
            self.state = [
                {name: np.zeros_like(weight) for name in ("m", "v", "v_hat")} for weight in weights
            ]
        self.iterations += 1
        # keras/src/optimizers/adam.py's operations in its order, in the weight's dtype.
        for state, weight, gradient in zip(self.state, weights, gradients, strict=True):
            dtype = weight.dtype.type
            step = dtype(self.iterations)
            beta_1_power = np.power(keras_float(self.beta_1, dtype), step)
            beta_2_power = np.power(keras_float(self.beta_2, dtype), step)
            alpha = dtype(self.learning_rate) * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            momentum, velocity = state["m"], state["v"]
            momentum += (gradient - momentum) * (1 - self.beta_1)
            velocity += (np.square(gradient) - velocity) * (1 - self.beta_2)
            if self.amsgrad:
                np.maximum(state["v_hat"], velocity, out=state["v_hat"])
                velocity = state["v_hat"]
            weight -= (momentum * alpha) / (np.sqrt(velocity) + self.epsilon)


def make_optimizer(params: OptimizerParams):
    """The optimizer params.yaml names, with exactly its settings."""
    optimizer = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}[params.name]
    return optimizer(**params.model_dump(exclude={"name"}))


def train(
    weights: list[np.ndarray],
    x: np.ndarray,
    y_onehot: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    optimizer,
    seed: int,
    activation: str = "relu",
    dropout: float = 0.0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence = (),
) -> dict[str, list[float]]:
    """Trains weights in place on a fresh shuffle per epoch drawn from the seed; returns the
    per-epoch history as Keras' fit reports it. Each callback's `on_epoch_end(epoch, logs)` runs
    after each epoch (0-based, as in Keras); what it raises stops training."""
    rng = np.random.default_rng(seed)
    dropout_rng = np.random.default_rng([seed, DROPOUT_STREAM])
    widths = [kernel.shape[1] for kernel in weights[0:-2:2]]
    labels = y_onehot.argmax(axis=1)
    y_onehot = y_onehot.astype(weights[0].dtype, copy=False)
    history: dict[str, list[float]] = {}
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        loss_total, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            x_batch = x[rows].astype(weights[0].dtype, copy=False)
            masks = dropout_masks(dropout_rng, len(rows), widths, dropout, weights[0].dtype)
            loss, gradients, probabilities = loss_and_gradients(
                weights, x_batch, y_onehot[rows], activation, masks
            )
            optimizer.apply(weights, gradients)
            loss_total += loss * len(rows)
            correct += int(np.count_nonzero(probabilities.argmax(axis=1) == labels[rows]))
        logs = {"loss": loss_total / len(x), "accuracy": correct / len(x)}
        if validation is not None:
            scores = evaluate(weights, *validation, activation)
            logs |= {f"val_{name}": value for name, value in scores.items()}
        summary = ", ".join(f"{name} {value:.4f}" for name, value in logs.items())
        log.info("epoch %d/%d: %s", epoch + 1, epochs, summary)
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
        for callback in callbacks:
            callback.on_epoch_end(epoch, dict(logs))
    return history


def fit_portable(
    features: np.ndarray,
    targets: np.ndarray,
    params: TrainParams,
    seed: int,
    *,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence = (),
) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    """`train` under portable.pinned_blas (a PipelineError where the process cannot run it), so
    that the weights are the same on any x86-64 CPU with AVX2 and FMA; with the history."""
    with portable.pinned_blas(params.threads):
        weights = init_weights(np.random.default_rng(seed), features.shape[1], params.widths)
        history = train(
            weights,
            features,
            targets,
            epochs=params.epochs,
            batch_size=params.batch_size,
            optimizer=make_optimizer(params.optimizer),
            seed=seed,
            activation=params.activation,
            dropout=params.dropout,
            validation=validation,
            callbacks=callbacks,
        )
    return weights, history
