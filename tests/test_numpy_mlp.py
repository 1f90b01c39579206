"""The NumPy network checked against finite differences, TensorFlow and Keras."""

from __future__ import annotations

import dataclasses
import doctest
import math
import os
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.modelling.mlp import (
    ACTIVATIONS,
    MLPWeights,
    categorical_crossentropy,
    forward,
    forward_with_cache,
    predict_proba,
)
from mnist_pipeline.scratch.numpy_mlp import (
    SGD,
    Adam,
    GradientDescent,
    MiniBatchSGD,
    RMSprop,
    chapter_naive_backpropagation,
    chapter_naive_gradient,
    dropout_masks,
    init_weights,
    loss_and_gradients,
    make_optimizer,
    train,
)

INPUT_DIM, HIDDEN_UNITS, BATCH = 5, 4, 3
ACTIVATION_NAMES = sorted(ACTIVATIONS)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = max(np.linalg.norm(actual), np.linalg.norm(expected))
    return float(np.linalg.norm(actual - expected) / scale) if scale else 0.0


def one_hot(labels: np.ndarray, dtype=np.float64) -> np.ndarray:
    return np.eye(10, dtype=dtype)[labels]


def tiny_network(seed: int = 0) -> tuple[MLPWeights, np.ndarray, np.ndarray]:
    """Float64 weights with non-zero biases (so their gradients are exercised) and a batch."""
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, INPUT_DIM, HIDDEN_UNITS, dtype=np.float64)
    weights.hidden_bias[:] = rng.normal(0, 0.3, HIDDEN_UNITS)
    weights.output_bias[:] = rng.normal(0, 0.3, 10)
    x = rng.normal(size=(BATCH, INPUT_DIM))
    y = one_hot(rng.integers(0, 10, BATCH))
    return weights, x, y


def separable_problem(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Ten well-separated Gaussian clusters in 8 dimensions, one per class."""
    rng = np.random.default_rng(7)
    centers = rng.normal(0, 3, size=(10, 8))
    labels = rng.integers(0, 10, rows)
    x = (centers[labels] + rng.normal(0, 0.5, size=(rows, 8))).astype(np.float32)
    return x, one_hot(labels, np.float32)


@pytest.fixture(scope="module")
def keras():
    """Keras on TensorFlow; imported only by the tests that compare against it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("these comparisons need the TensorFlow backend")
    return keras


def keras_twin(keras, weights: MLPWeights, activation: str):
    """A Keras Sequential of the same shape and dtype, holding the same weights."""
    dtype = weights.dtype.name
    model = keras.Sequential(
        [
            keras.Input(shape=(weights.input_dim,), dtype=dtype),
            *(
                keras.layers.Dense(width, activation=activation, dtype=dtype)
                for width in weights.widths
            ),
            keras.layers.Dense(10, activation="softmax", dtype=dtype),
        ]
    )
    model.set_weights(weights.as_keras_list())
    return model


def float64_crossentropy(keras):
    # A Keras loss casts predictions to its own dtype, float32 by default; in float64 the
    # comparison is not limited by float32 rounding.
    return keras.losses.CategoricalCrossentropy(dtype="float64")


# (a) Backpropagation agrees with central finite differences.


def assert_matches_finite_differences(weights: MLPWeights, gradients: MLPWeights, loss) -> None:
    """Each weight nudged up and down in place by a small step: `loss()` (of the current
    weights) changes as `gradients` say, to 1e-6 relative."""
    step = 1e-6
    for name, array in weights.named_arrays().items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            original = array[index]
            array[index] = original + step
            loss_up = loss()
            array[index] = original - step
            loss_down = loss()
            array[index] = original
            numeric[index] = (loss_up - loss_down) / (2 * step)
        assert relative_error(gradients.named_arrays()[name], numeric) < 1e-6, name


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_gradients_match_finite_differences(activation):
    weights, x, y = tiny_network()
    _, gradients = loss_and_gradients(weights, x, y, activation)
    assert_matches_finite_differences(
        weights, gradients, lambda: loss_and_gradients(weights, x, y, activation)[0]
    )


# (b) Forward pass, loss and gradients agree with Keras and tf.GradientTape.


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_matches_keras_model_and_gradient_tape(keras, activation):
    import tensorflow as tf

    weights, x, y = tiny_network(seed=1)
    model = keras_twin(keras, weights, activation)
    with tf.GradientTape() as tape:
        keras_probabilities = model(x)
        keras_loss = float64_crossentropy(keras)(y, keras_probabilities)
    keras_gradients = tape.gradient(keras_loss, model.trainable_variables)

    loss, gradients = loss_and_gradients(weights, x, y, activation)
    np.testing.assert_allclose(forward(weights, x, activation), keras_probabilities, rtol=1e-12)
    assert loss == pytest.approx(float(keras_loss), rel=1e-12)
    # The order of as_keras_list() is the order of the model's variables.
    for ours, theirs in zip(gradients.as_keras_list(), keras_gradients, strict=True):
        assert relative_error(ours, theirs.numpy()) < 1e-6


def test_loss_uses_logits_like_keras_and_only_bare_probabilities_are_clipped(keras):
    # One example the network is certain about and wrong: its logit margin is 100. The
    # model is float32, as in the pipeline, where Keras' loss receives the softmax output
    # itself and so computes the loss from its logits.
    weights = init_weights(np.random.default_rng(0), INPUT_DIM, HIDDEN_UNITS)
    weights.hidden_kernel[:] = np.eye(INPUT_DIM, HIDDEN_UNITS)
    weights.output_kernel[:] = 0
    weights.output_kernel[0, 0] = 100.0
    x = np.eye(1, INPUT_DIM, dtype=np.float32)
    y = one_hot(np.array([3]), np.float32)
    model = keras_twin(keras, weights, "relu")
    model.compile(loss="categorical_crossentropy")

    loss, _ = loss_and_gradients(weights, x, y, "relu")
    assert loss == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    assert loss == pytest.approx(100.0, rel=1e-6)

    # Given bare probabilities, Keras clips them at 1e-7, and so does categorical_crossentropy.
    probabilities = predict_proba(weights, x)
    keras_bare = float(keras.losses.CategoricalCrossentropy()(y, probabilities))
    assert categorical_crossentropy(y, probabilities) == pytest.approx(keras_bare, rel=1e-6)
    assert keras_bare == pytest.approx(-math.log(1e-7), rel=1e-6)


# (c) RMSprop is Keras 3's RMSprop, step for step.


@pytest.mark.parametrize(
    ("momentum", "centered"), [(0.0, False), (0.9, False), (0.0, True), (0.5, True)]
)
def test_rmsprop_matches_keras_step_for_step(keras, momentum, centered):
    weights, _, _ = tiny_network()
    variables = [keras.Variable(array, dtype="float64") for array in weights.as_keras_list()]
    options = dict(learning_rate=0.01, rho=0.8, momentum=momentum, epsilon=1e-7, centered=centered)
    keras_optimizer = keras.optimizers.RMSprop(**options)
    optimizer = RMSprop(**options)
    rng = np.random.default_rng(3)
    for _ in range(4):
        gradients = MLPWeights.from_keras_list(
            [rng.normal(size=a.shape) for a in weights.as_keras_list()]
        )
        keras_optimizer.apply_gradients(zip(gradients.as_keras_list(), variables, strict=True))
        optimizer.apply(weights, gradients)
        for ours, variable in zip(weights.as_keras_list(), variables, strict=True):
            np.testing.assert_array_equal(ours, variable.numpy())  # to the last bit
    assert optimizer.iterations == int(keras_optimizer.iterations.numpy()) == 4


def test_one_training_step_matches_keras_train_on_batch(keras):
    weights, x, y = tiny_network(seed=2)
    model = keras_twin(keras, weights, "tanh")
    model.compile(optimizer=keras.optimizers.RMSprop(), loss=float64_crossentropy(keras))
    keras_loss = model.train_on_batch(x, y)

    loss, gradients = loss_and_gradients(weights, x, y, "tanh")
    RMSprop().apply(weights, gradients)
    # Keras reports the loss through a float32 metric.
    assert loss == pytest.approx(keras_loss, rel=1e-6)
    for ours, theirs in zip(weights.as_keras_list(), model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


# (c2) Deeper networks and dropout: the chain rule through every layer, checked the same ways.

WIDTHS = (6, 5)


def deep_network(seed: int = 0, rate: float = 0.3):
    """A float64 network of two hidden layers with non-zero biases, a batch, and dropout masks
    for it."""
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, INPUT_DIM, WIDTHS, dtype=np.float64)
    for bias in weights.biases:
        bias[:] = rng.normal(0, 0.3, bias.shape)
    x = rng.normal(size=(BATCH + 2, INPUT_DIM))
    y = one_hot(rng.integers(0, 10, BATCH + 2))
    masks = dropout_masks(rng, len(x), WIDTHS, rate, np.float64)
    return weights, x, y, masks


def test_dropout_masks_drop_at_the_rate_and_scale_the_rest():
    masks = dropout_masks(np.random.default_rng(0), 4000, (50,), 0.25, np.float32)
    (mask,) = masks
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, np.float32(1 / 0.75)}
    assert np.mean(mask == 0) == pytest.approx(0.25, abs=0.01)
    assert mask.mean() == pytest.approx(1.0, abs=0.02)  # the expected output is unchanged
    assert dropout_masks(np.random.default_rng(0), 3, (4, 2), 0.0, np.float32) == []


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_deep_gradients_with_dropout_match_finite_differences(activation):
    weights, x, y, masks = deep_network()
    _, gradients = loss_and_gradients(weights, x, y, activation, masks)
    assert_matches_finite_differences(
        weights, gradients, lambda: loss_and_gradients(weights, x, y, activation, masks)[0]
    )


def masked_twin(keras, weights: MLPWeights, activation: str):
    """A Keras model of weights' shape whose hidden outputs are multiplied by masks given as
    extra inputs: Keras' own Dropout with the masks NumPy drew, so both compute the same."""
    dtype = weights.dtype.name
    inputs = keras.Input(shape=(weights.input_dim,), dtype=dtype)
    mask_inputs = [keras.Input(shape=(width,), dtype=dtype) for width in weights.widths]
    hidden = inputs
    for width, mask in zip(weights.widths, mask_inputs, strict=True):
        hidden = keras.layers.Dense(width, activation=activation, dtype=dtype)(hidden)
        hidden = keras.layers.Multiply(dtype=dtype)([hidden, mask])
    outputs = keras.layers.Dense(10, activation="softmax", dtype=dtype)(hidden)
    model = keras.Model([inputs, *mask_inputs], outputs)
    model.set_weights(weights.as_keras_list())
    return model


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_deep_gradients_with_dropout_match_gradient_tape(keras, activation):
    import tensorflow as tf

    weights, x, y, masks = deep_network(seed=1)
    model = masked_twin(keras, weights, activation)
    with tf.GradientTape() as tape:
        keras_loss = float64_crossentropy(keras)(y, model([x, *masks]))
    keras_gradients = tape.gradient(keras_loss, model.trainable_variables)
    loss, gradients = loss_and_gradients(weights, x, y, activation, masks)
    assert loss == pytest.approx(float(keras_loss), rel=1e-12)
    for ours, theirs in zip(gradients.as_keras_list(), keras_gradients, strict=True):
        # Float64 matrix products summed in another order (NumPy's BLAS, TensorFlow's Eigen):
        # equal to ~1e-15, not to the bit.
        assert relative_error(ours, theirs.numpy()) < 1e-12


# (c3) SGD and Adam are Keras 3's, step for step.


def keras_and_ours(keras, ours, theirs, options, dtype):
    """Our optimizer and Keras' one, each with its own copy of the same float weights, and
    the gradients to give both: five steps of random ones."""
    weights = init_weights(np.random.default_rng(0), INPUT_DIM, WIDTHS, dtype=dtype)
    variables = [keras.Variable(array, dtype=dtype) for array in weights.as_keras_list()]
    rng = np.random.default_rng(3)
    steps = [
        MLPWeights.from_keras_list(
            [rng.normal(size=a.shape).astype(dtype) for a in weights.as_keras_list()]
        )
        for _ in range(5)
    ]
    return weights, ours(**options), variables, getattr(keras.optimizers, theirs)(**options), steps


@pytest.mark.parametrize(
    "options",
    [
        dict(learning_rate=0.1, momentum=0.0, nesterov=False),
        dict(learning_rate=0.1, momentum=0.9, nesterov=False),
        dict(learning_rate=0.05, momentum=0.5, nesterov=True),
    ],
    ids=["sgd", "momentum", "nesterov"],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sgd_matches_keras_bit_for_bit(keras, options, dtype):
    """The same gradients give the same weights, to the last bit, on any CPU: the update is
    element-wise, made of +, - and * alone, which IEEE 754 rounds correctly everywhere, and
    both sides do them in the same order (as the RMSprop test above, whose sqrt and / are
    correctly rounded too)."""
    weights, optimizer, variables, keras_optimizer, steps = keras_and_ours(
        keras, SGD, "SGD", options, dtype
    )
    for gradients in steps:
        keras_optimizer.apply_gradients(zip(gradients.as_keras_list(), variables, strict=True))
        optimizer.apply(weights, gradients)
        for mine, variable in zip(weights.as_keras_list(), variables, strict=True):
            np.testing.assert_array_equal(mine, variable.numpy())
    assert optimizer.iterations == int(keras_optimizer.iterations.numpy()) == 5


# Adam's bias correction raises beta_1 and beta_2 to the step number with pow, which IEEE 754
# does not require to be correctly rounded, and which the CPU decides: NumPy's np.power runs
# Intel's SVML on CPUs with AVX-512 (its documented bound: 4 ulp) and the C library's pow
# (under 1 ulp) on the others, TensorFlow its own. So the two sides' powers may be up to 5 ulp
# apart; this allows 8. Every other operation of the update (+, -, *, /, sqrt, maximum) is
# correctly rounded on any CPU, and the moments m and v depend on the gradients alone, so they
# agree to the bit: only the step size alpha, and through it the update, can differ.
POWER_ULPS = 8


def adam_update_error(options: dict, dtype: str, step: int) -> float:
    """A bound on the relative difference between two implementations' Adam updates at step
    (from 1), from powers POWER_ULPS apart: 1 - beta**step magnifies a power's relative error
    by beta**step / (1 - beta**step) (999 for beta 0.999 at step 1); alpha takes all of
    beta_1's and half of beta_2's (under a square root); the six correctly rounded operations
    from the powers to the update add at most one eps each."""
    eps = float(np.finfo(dtype).eps)

    def one_minus_power_error(beta: float) -> float:
        power = float(np.float32(beta)) ** step  # Keras' beta is float32
        return POWER_ULPS * eps * power / (1 - power)

    beta_1, beta_2 = options.get("beta_1", 0.9), options.get("beta_2", 0.999)
    return one_minus_power_error(beta_1) + one_minus_power_error(beta_2) / 2 + 6 * eps


@pytest.mark.parametrize(
    "options",
    [
        dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        dict(learning_rate=0.01, beta_1=0.8, beta_2=0.9, amsgrad=True),
    ],
    ids=["adam", "amsgrad"],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_matches_keras_up_to_the_rounding_of_its_powers(keras, options, dtype):
    """The same gradients give the same weights up to what the CPU's pow decides: each step
    may move a weight by its update times adam_update_error, plus one ulp of the weight where
    the subtraction rounds the other way. Tight: float32-rounded betas treated as float64
    ones, epsilon inside the square root, or a missing bias correction fail it (float64), by
    orders of magnitude."""
    weights, optimizer, variables, keras_optimizer, steps = keras_and_ours(
        keras, Adam, "Adam", options, dtype
    )
    allowed = [np.zeros_like(array) for array in weights.as_keras_list()]
    for step, gradients in enumerate(steps, start=1):
        before = [variable.numpy() for variable in variables]
        keras_optimizer.apply_gradients(zip(gradients.as_keras_list(), variables, strict=True))
        optimizer.apply(weights, gradients)
        error = adam_update_error(options, dtype, step)
        arrays = zip(weights.as_keras_list(), variables, before, allowed, strict=True)
        for mine, variable, previous, bound in arrays:
            theirs = variable.numpy()
            bound += error * np.abs(theirs - previous) + np.spacing(np.abs(theirs))
            assert np.all(np.abs(mine - theirs) <= bound), (
                f"step {step}: {np.abs(mine - theirs).max():.3g} apart, "
                f"more than the bound {bound.flat[np.argmax(np.abs(mine - theirs))]:.3g}"
            )
    assert optimizer.iterations == int(keras_optimizer.iterations.numpy()) == 5


KERAS_OPTIMIZERS = {
    "sgd": dict(learning_rate=0.1, momentum=0.9, nesterov=True),
    "rmsprop": dict(learning_rate=0.01, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False),
    "adam": dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False),
}


@pytest.mark.parametrize("name", sorted(KERAS_OPTIMIZERS))
def test_training_two_hidden_layers_with_dropout_matches_keras(keras, name):
    """numpy_mlp.train against Keras' train_on_batch on the same batches, with the dropout
    masks train draws given to Keras' twin: the same weights after every step, up to float64
    rounding of matrix products summed in another order."""
    from mnist_pipeline.scratch.numpy_mlp import DROPOUT_STREAM

    x, y = separable_problem(rows=40)
    x, y = x.astype(np.float64), y.astype(np.float64)
    weights = init_weights(np.random.default_rng(0), x.shape[1], WIDTHS, dtype=np.float64)
    model = masked_twin(keras, weights, "relu")
    model.compile(
        optimizer=getattr(
            keras.optimizers, {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam"}[name]
        )(**KERAS_OPTIMIZERS[name]),
        loss=float64_crossentropy(keras),
        jit_compile=False,
    )
    seed, rate, batch_size, epochs = 5, 0.3, 16, 2
    history = train(
        weights,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=make_optimizer(name, **KERAS_OPTIMIZERS[name]),
        seed=seed,
        dropout=rate,
    )
    # The batches and masks train drew, drawn again from the same seed.
    shuffles, masks_rng = np.random.default_rng(seed), np.random.default_rng([seed, DROPOUT_STREAM])
    for _ in range(epochs):
        order = shuffles.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            masks = dropout_masks(masks_rng, len(rows), WIDTHS, rate, np.float64)
            model.train_on_batch([x[rows], *masks], y[rows])
    for ours, theirs in zip(weights.as_keras_list(), model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert history["loss"][-1] < history["loss"][0]


# (d) Each update rule lowers the loss on an easy problem.


@pytest.mark.parametrize(
    ("make", "epochs"),
    [
        (lambda: GradientDescent(learning_rate=0.5), 40),
        (lambda: MiniBatchSGD(learning_rate=0.1), 10),
        (RMSprop, 20),
        (lambda: SGD(learning_rate=0.05, momentum=0.9), 10),
        (Adam, 20),
    ],
    ids=["gradient_descent", "mini_batch_sgd", "rmsprop", "sgd_momentum", "adam"],
)
def test_every_update_rule_lowers_the_loss(make, epochs):
    x, y = separable_problem()
    weights = init_weights(np.random.default_rng(0), x.shape[1], 16)
    history = train(weights, x, y, epochs=epochs, batch_size=16, optimizer=make(), seed=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    final_loss, _ = loss_and_gradients(weights, x, y)
    assert final_loss < 0.5
    assert np.mean(predict_proba(weights, x).argmax(axis=1) == y.argmax(axis=1)) > 0.9


class CountingOptimizer:
    """Leaves the weights alone and counts its steps."""

    def __init__(self, full_batch: bool) -> None:
        self.full_batch = full_batch
        self.steps = 0

    def apply(self, weights: MLPWeights, gradients: MLPWeights) -> None:
        # The weights stay as they are, so every batch sees the same network.
        self.steps += 1


def test_gradient_descent_steps_once_per_epoch_and_sgd_once_per_batch():
    x, y = separable_problem(rows=50)
    weights = init_weights(np.random.default_rng(0), x.shape[1], 6)
    full = CountingOptimizer(full_batch=True)
    train(weights, x, y, epochs=3, batch_size=16, optimizer=full, seed=0)
    assert full.steps == 3
    mini = CountingOptimizer(full_batch=False)
    train(weights, x, y, epochs=3, batch_size=16, optimizer=mini, seed=0)
    assert mini.steps == 3 * math.ceil(50 / 16)


def test_history_is_the_batch_size_weighted_mean_like_keras():
    # With weights that never change, the weighted mean over uneven batches (16, 16, 16, 2)
    # must equal the loss and accuracy of the whole data set.
    x, y = separable_problem(rows=50)
    weights = init_weights(np.random.default_rng(0), x.shape[1], 6, dtype=np.float64)
    calls = []
    history = train(
        weights,
        x,
        y,
        epochs=2,
        batch_size=16,
        optimizer=CountingOptimizer(full_batch=False),
        seed=0,
        on_epoch_end=lambda epoch, logs: calls.append((epoch, logs)),
    )
    full_loss, _ = loss_and_gradients(weights, x, y)
    full_accuracy = np.mean(forward(weights, x).argmax(axis=1) == y.argmax(axis=1))
    assert history["loss"] == pytest.approx([full_loss] * 2, rel=1e-12)
    assert history["accuracy"] == pytest.approx([full_accuracy] * 2)
    assert [epoch for epoch, _ in calls] == [0, 1]
    assert calls[1][1] == {"loss": history["loss"][1], "accuracy": history["accuracy"][1]}


# (e) The chapter's naive backpropagation is not the gradient.


def test_chapter_naive_gradient_is_not_the_true_gradient():
    weights, x, y = tiny_network()
    cache = forward_with_cache(weights, x)
    naive = chapter_naive_gradient(cache.hidden_output, y)
    _, true_gradients = loss_and_gradients(weights, x, y)
    assert naive.shape == true_gradients.output_kernel.shape
    assert relative_error(naive, true_gradients.output_kernel) > 0.5

    # It ignores the prediction: other output weights give another gradient, but the same
    # naive one.
    changed = weights.copy()
    changed.output_kernel *= -3
    _, changed_gradients = loss_and_gradients(changed, x, y)
    assert relative_error(changed_gradients.output_kernel, true_gradients.output_kernel) > 0.1
    np.testing.assert_array_equal(
        chapter_naive_gradient(forward_with_cache(changed, x).hidden_output, y), naive
    )

    # A small step against the true gradient lowers the loss; against the naive one, raises it.
    loss, _ = loss_and_gradients(weights, x, y)
    for direction, lowers in [(true_gradients.output_kernel, True), (naive, False)]:
        stepped = weights.copy()
        stepped.output_kernel -= 1e-3 * direction / np.linalg.norm(direction)
        assert (loss_and_gradients(stepped, x, y)[0] < loss) is lowers


def test_chapter_naive_backpropagation_updates_the_data_not_the_weights():
    _, x, y = tiny_network()
    with pytest.raises(ValueError, match=r"\(5, 10\).*\(3, 5\)"):
        chapter_naive_backpropagation(x, y, learning_rate=0.1)
    # It only runs when x.T @ y happens to have x's shape, and then it changes x.
    square = np.arange(4.0).reshape(2, 2)
    before = square.copy()
    updated = chapter_naive_backpropagation(square, np.eye(2), learning_rate=0.5)
    np.testing.assert_array_equal(updated, before - 0.5 * before.T)
    np.testing.assert_array_equal(square, before)


# (f) Training is reproducible from its seed.


@pytest.mark.parametrize("optimizer_class", [MiniBatchSGD, RMSprop])
def test_same_seed_same_weights_other_seed_other_weights(optimizer_class):
    x, y = separable_problem(rows=100)

    def trained(seed: int) -> MLPWeights:
        weights = init_weights(np.random.default_rng(0), x.shape[1], 8)
        train(weights, x, y, epochs=2, batch_size=32, optimizer=optimizer_class(), seed=seed)
        return weights

    first, again, other = trained(1), trained(1), trained(2)
    for a, b in zip(first.as_keras_list(), again.as_keras_list(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.hidden_kernel, other.hidden_kernel)


# Weights, initialisation and helpers.


def test_init_weights_is_glorot_uniform_with_zero_biases():
    weights = init_weights(np.random.default_rng(0), 784, 512)
    limit = math.sqrt(6 / (784 + 512))
    assert weights.dtype == np.float32
    assert weights.hidden_kernel.shape == (784, 512)
    assert np.abs(weights.hidden_kernel).max() <= limit
    # A uniform distribution on [-limit, limit] has standard deviation limit / sqrt(3).
    assert weights.hidden_kernel.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    assert np.abs(weights.output_kernel).max() <= math.sqrt(6 / (512 + 10))
    assert not weights.hidden_bias.any() and not weights.output_bias.any()
    again = init_weights(np.random.default_rng(0), 784, 512)
    np.testing.assert_array_equal(weights.hidden_kernel, again.hidden_kernel)


def test_keras_list_round_trip_and_predict_proba_batches():
    weights, x, _ = tiny_network()
    rebuilt = MLPWeights.from_keras_list(weights.as_keras_list())
    for a, b in zip(rebuilt.as_keras_list(), weights.as_keras_list(), strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
    probabilities = predict_proba(weights, x, batch_size=2)
    np.testing.assert_allclose(probabilities, forward(weights, x), rtol=1e-15)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_make_optimizer_by_name():
    optimizer = make_optimizer("rmsprop", learning_rate=0.01, centered=True)
    assert isinstance(optimizer, RMSprop) and optimizer.centered
    assert isinstance(make_optimizer("gradient_descent"), GradientDescent)
    assert make_optimizer("mini_batch_sgd").full_batch is False


# (g) Bad input is refused with a ValueError that says what was wrong.

WEIGHTS = tiny_network()[0]
X = np.zeros((3, INPUT_DIM))
Y = one_hot(np.array([0, 1, 2]))


def _train(**overrides):
    arguments = dict(epochs=1, batch_size=2, optimizer=MiniBatchSGD(), seed=0)
    arguments.update(overrides)
    return train(WEIGHTS.copy(), X, Y, **arguments)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: forward(WEIGHTS, np.zeros(INPUT_DIM)), r"2D.*\(5,\)"),
        (lambda: forward(WEIGHTS, np.zeros((3, 6))), r"6 features.*expect 5"),
        (lambda: forward(WEIGHTS, np.zeros((3, 1, 5))), r"\(3, 1, 5\)"),
        (lambda: forward(WEIGHTS, np.zeros((0, 5))), "no rows"),
        (lambda: forward(WEIGHTS, np.zeros((3, 5), dtype=np.uint8)), "floating-point.*uint8"),
        (lambda: forward(WEIGHTS, X, activation="softplus"), "relu, sigmoid, tanh"),
        (lambda: loss_and_gradients(WEIGHTS, X, Y[:, :9]), r"\(3, 10\).*\(3, 9\)"),
        (lambda: loss_and_gradients(WEIGHTS, X, Y[:2]), r"\(3, 10\).*\(2, 10\)"),
        (lambda: loss_and_gradients(WEIGHTS, X, np.array([0, 1, 2])), r"to_categorical"),
        (lambda: loss_and_gradients(WEIGHTS, X, Y * 0.5), "one-hot"),
        (lambda: loss_and_gradients(WEIGHTS, X, Y + Y[::-1]), "one-hot"),
        (lambda: _train(epochs=0), "epochs"),
        (lambda: _train(batch_size=0), "batch_size"),
        (lambda: _train(batch_size=2.5), "batch_size"),
        (lambda: _train(seed="42"), "seed"),
        (lambda: _train(optimizer="rmsprop"), "apply"),
        (lambda: predict_proba(WEIGHTS, X, batch_size=0), "batch_size"),
        (lambda: RMSprop(learning_rate=0), "learning_rate"),
        (lambda: RMSprop(rho=1.0), "rho"),
        (lambda: RMSprop(momentum=-0.1), "momentum"),
        (lambda: RMSprop(rho="0.9"), "rho must be a number"),
        (lambda: GradientDescent(learning_rate=float("nan")), "learning_rate"),
        (lambda: make_optimizer("adagrad"), "gradient_descent, mini_batch_sgd, sgd, rmsprop, adam"),
        (lambda: make_optimizer("sgd", rho=0.9), "rho"),
        (lambda: SGD(momentum=1.0), "momentum"),
        (lambda: SGD(learning_rate=-1), "learning_rate"),
        (lambda: Adam(beta_1=1.0), "beta_1"),
        (lambda: Adam(beta_2=-0.1), "beta_2"),
        (lambda: Adam(epsilon=0), "epsilon"),
        (lambda: _train(dropout=1.0), "dropout"),
        (lambda: init_weights(np.random.default_rng(0), 5, [4, 0]), "hidden_units"),
        (lambda: init_weights(np.random.default_rng(0), 5, []), "hidden_units"),
        (lambda: loss_and_gradients(WEIGHTS, X, Y, masks=[np.ones((2, 4))]), r"\(3, 4\)"),
        (lambda: make_optimizer("rmsprop", beta=0.9), "beta"),
        (lambda: init_weights(np.random.default_rng(0), 0, 4), "input_dim"),
        (lambda: init_weights(42, 5, 4), "default_rng"),
        (lambda: init_weights(np.random.default_rng(0), 5, 4, dtype=np.int32), "floating"),
        (lambda: MLPWeights.from_keras_list(WEIGHTS.as_keras_list()[:3]), "got 3"),
        (
            lambda: dataclasses.replace(WEIGHTS, biases=[np.zeros(7), WEIGHTS.output_bias]),
            r"'dense/bias': \(7,\)",
        ),
        (
            lambda: dataclasses.replace(
                WEIGHTS, biases=[WEIGHTS.hidden_bias, np.zeros(10, dtype=np.float32)]
            ),
            "one dtype",
        ),
        (
            lambda: MLPWeights(
                kernels=[np.zeros((5, 4)), np.zeros((3, 10))], biases=[np.zeros(4), np.zeros(10)]
            ),
            r"'dense_1/kernel': \(4, 10\)",
        ),
        (lambda: MLPWeights(kernels=[], biases=[]), "at least one layer"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_rmsprop_refuses_weights_of_another_shape():
    optimizer = RMSprop()
    weights = tiny_network()[0]
    optimizer.apply(weights, weights.copy())
    other = init_weights(np.random.default_rng(0), INPUT_DIM + 1, HIDDEN_UNITS, dtype=np.float64)
    with pytest.raises(ValueError, match=r"'dense/kernel': \(5, 4\).*'dense/kernel': \(6, 4\)"):
        optimizer.apply(other, other.copy())


def test_math_doc_examples_print_what_the_doc_says():
    math_doc = Path(__file__).resolve().parents[1] / "docs" / "math.md"
    results = doctest.testfile(str(math_doc), module_relative=False, verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} examples in {math_doc} are out of date"
