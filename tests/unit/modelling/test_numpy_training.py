"""The portable trainer checked against finite differences, TensorFlow and Keras."""

from __future__ import annotations

import doctest
import math
import os

import numpy as np
import pytest
from pydantic import TypeAdapter

from conftest import REPO_ROOT
from mnist_pipeline.modelling.mlp import categorical_crossentropy, forward, predict_proba
from mnist_pipeline.modelling.numpy_training import (
    DERIVATIVES,
    DROPOUT_STREAM,
    SGD,
    Adam,
    RMSprop,
    dropout_masks,
    init_weights,
    loss_and_gradients,
    make_optimizer,
    train,
)
from mnist_pipeline.params import OptimizerParams

optimizer_params = TypeAdapter(OptimizerParams).validate_python

INPUT_DIM, HIDDEN_UNITS, BATCH = 5, 4, 3
ACTIVATION_NAMES = sorted(DERIVATIVES)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = max(np.linalg.norm(actual), np.linalg.norm(expected))
    return float(np.linalg.norm(actual - expected) / scale) if scale else 0.0


def one_hot(labels: np.ndarray, dtype=np.float64) -> np.ndarray:
    return np.eye(10, dtype=dtype)[labels]


def tiny_network(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Float64 weights with non-zero biases (so their gradients are exercised) and a batch."""
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, INPUT_DIM, [HIDDEN_UNITS], dtype=np.float64)
    weights[1][:] = rng.normal(0, 0.3, HIDDEN_UNITS)
    weights[3][:] = rng.normal(0, 0.3, 10)
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


def widths(weights) -> list[int]:
    return [kernel.shape[1] for kernel in weights[0:-2:2]]


def keras_twin(keras, weights, activation: str):
    """A Keras Sequential of the same shape and dtype, holding the same weights."""
    dtype = weights[0].dtype.name
    model = keras.Sequential(
        [
            keras.Input(shape=(weights[0].shape[0],), dtype=dtype),
            *(
                keras.layers.Dense(width, activation=activation, dtype=dtype)
                for width in widths(weights)
            ),
            keras.layers.Dense(10, activation="softmax", dtype=dtype),
        ]
    )
    model.set_weights(weights)
    return model


def float64_crossentropy(keras):
    # A Keras loss casts predictions to its own dtype, float32 by default; in float64 the
    # comparison is not limited by float32 rounding.
    return keras.losses.CategoricalCrossentropy(dtype="float64")


# (a) Backpropagation agrees with central finite differences.


def assert_matches_finite_differences(weights, gradients, loss) -> None:
    """Each weight nudged up and down in place by a small step: `loss()` (of the current
    weights) changes as `gradients` say, to 1e-6 relative."""
    step = 1e-6
    for name, array in enumerate(weights):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            original = array[index]
            array[index] = original + step
            loss_up = loss()
            array[index] = original - step
            loss_down = loss()
            array[index] = original
            numeric[index] = (loss_up - loss_down) / (2 * step)
        assert relative_error(gradients[name], numeric) < 1e-6, name


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_gradients_match_finite_differences(activation):
    weights, x, y = tiny_network()
    _, gradients, _ = loss_and_gradients(weights, x, y, activation)
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

    loss, gradients, probabilities = loss_and_gradients(weights, x, y, activation)
    np.testing.assert_allclose(probabilities, keras_probabilities, rtol=1e-12)
    np.testing.assert_allclose(
        forward(weights, x, [activation, "softmax"]), keras_probabilities, rtol=1e-12
    )
    assert loss == pytest.approx(float(keras_loss), rel=1e-12)
    # The order of get_weights() is the order of the model's variables.
    for ours, theirs in zip(gradients, keras_gradients, strict=True):
        assert relative_error(ours, theirs.numpy()) < 1e-6


def test_loss_uses_logits_like_keras_and_only_bare_probabilities_are_clipped(keras):
    # One example the network is certain about and wrong: its logit margin is 100. The
    # model is float32, as in the pipeline, where Keras' loss receives the softmax output
    # itself and so computes the loss from its logits.
    weights = init_weights(np.random.default_rng(0), INPUT_DIM, [HIDDEN_UNITS])
    weights[0][:] = np.eye(INPUT_DIM, HIDDEN_UNITS)
    weights[2][:] = 0
    weights[2][0, 0] = 100.0
    x = np.eye(1, INPUT_DIM, dtype=np.float32)
    y = one_hot(np.array([3]), np.float32)
    model = keras_twin(keras, weights, "relu")
    model.compile(loss="categorical_crossentropy")

    loss, _, _ = loss_and_gradients(weights, x, y, "relu")
    assert loss == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    assert loss == pytest.approx(100.0, rel=1e-6)

    # Given bare probabilities, Keras clips them at 1e-7, and so does categorical_crossentropy.
    probabilities = predict_proba(weights, x, ["relu", "softmax"])
    keras_bare = float(keras.losses.CategoricalCrossentropy()(y, probabilities))
    assert categorical_crossentropy(y, probabilities) == pytest.approx(keras_bare, rel=1e-6)
    assert keras_bare == pytest.approx(-math.log(1e-7), rel=1e-6)


# (c) RMSprop is Keras 3's RMSprop, step for step.


@pytest.mark.parametrize(
    ("momentum", "centered"), [(0.0, False), (0.9, False), (0.0, True), (0.5, True)]
)
def test_rmsprop_matches_keras_step_for_step(keras, momentum, centered):
    weights, _, _ = tiny_network()
    variables = [keras.Variable(array, dtype="float64") for array in weights]
    options = dict(learning_rate=0.01, rho=0.8, momentum=momentum, epsilon=1e-7, centered=centered)
    keras_optimizer = keras.optimizers.RMSprop(**options)
    optimizer = RMSprop(**options)
    rng = np.random.default_rng(3)
    for _ in range(4):
        gradients = [rng.normal(size=a.shape) for a in weights]
        keras_optimizer.apply_gradients(zip(gradients, variables, strict=True))
        optimizer.apply(weights, gradients)
        for ours, variable in zip(weights, variables, strict=True):
            np.testing.assert_array_equal(ours, variable.numpy())  # to the last bit


def test_one_training_step_matches_keras_train_on_batch(keras):
    weights, x, y = tiny_network(seed=2)
    model = keras_twin(keras, weights, "tanh")
    model.compile(optimizer=keras.optimizers.RMSprop(), loss=float64_crossentropy(keras))
    keras_loss = model.train_on_batch(x, y)

    loss, gradients, _ = loss_and_gradients(weights, x, y, "tanh")
    RMSprop().apply(weights, gradients)
    # Keras reports the loss through a float32 metric.
    assert loss == pytest.approx(keras_loss, rel=1e-6)
    for ours, theirs in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


# (c2) Deeper networks and dropout: the chain rule through every layer, checked the same ways.

WIDTHS = (6, 5)


def deep_network(seed: int = 0, rate: float = 0.3):
    """A float64 network of two hidden layers with non-zero biases, a batch, and dropout masks
    for it."""
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, INPUT_DIM, WIDTHS, dtype=np.float64)
    for bias in weights[1::2]:
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
    _, gradients, _ = loss_and_gradients(weights, x, y, activation, masks)
    assert_matches_finite_differences(
        weights, gradients, lambda: loss_and_gradients(weights, x, y, activation, masks)[0]
    )


def masked_twin(keras, weights, activation: str):
    """A Keras model of weights' shape whose hidden outputs are multiplied by masks given as
    extra inputs: Keras' own Dropout with the masks NumPy drew, so both compute the same."""
    dtype = weights[0].dtype.name
    inputs = keras.Input(shape=(weights[0].shape[0],), dtype=dtype)
    mask_inputs = [keras.Input(shape=(width,), dtype=dtype) for width in widths(weights)]
    hidden = inputs
    for width, mask in zip(widths(weights), mask_inputs, strict=True):
        hidden = keras.layers.Dense(width, activation=activation, dtype=dtype)(hidden)
        hidden = keras.layers.Multiply(dtype=dtype)([hidden, mask])
    outputs = keras.layers.Dense(10, activation="softmax", dtype=dtype)(hidden)
    model = keras.Model([inputs, *mask_inputs], outputs)
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_deep_gradients_with_dropout_match_gradient_tape(keras, activation):
    import tensorflow as tf

    weights, x, y, masks = deep_network(seed=1)
    model = masked_twin(keras, weights, activation)
    with tf.GradientTape() as tape:
        keras_loss = float64_crossentropy(keras)(y, model([x, *masks]))
    keras_gradients = tape.gradient(keras_loss, model.trainable_variables)
    loss, gradients, _ = loss_and_gradients(weights, x, y, activation, masks)
    assert loss == pytest.approx(float(keras_loss), rel=1e-12)
    for ours, theirs in zip(gradients, keras_gradients, strict=True):
        # Float64 matrix products summed in another order (NumPy's BLAS, TensorFlow's Eigen):
        # equal to ~1e-15, not to the bit.
        assert relative_error(ours, theirs.numpy()) < 1e-12


# (c3) SGD and Adam are Keras 3's, step for step.


def keras_and_ours(keras, ours, theirs, options, dtype):
    """Our optimizer and Keras' one, each with its own copy of the same float weights, and
    the gradients to give both: five steps of random ones."""
    weights = init_weights(np.random.default_rng(0), INPUT_DIM, WIDTHS, dtype=dtype)
    variables = [keras.Variable(array, dtype=dtype) for array in weights]
    rng = np.random.default_rng(3)
    steps = [[rng.normal(size=a.shape).astype(dtype) for a in weights] for _ in range(5)]
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
        keras_optimizer.apply_gradients(zip(gradients, variables, strict=True))
        optimizer.apply(weights, gradients)
        for mine, variable in zip(weights, variables, strict=True):
            np.testing.assert_array_equal(mine, variable.numpy())


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
    allowed = [np.zeros_like(array) for array in weights]
    for step, gradients in enumerate(steps, start=1):
        before = [variable.numpy() for variable in variables]
        keras_optimizer.apply_gradients(zip(gradients, variables, strict=True))
        optimizer.apply(weights, gradients)
        error = adam_update_error(options, dtype, step)
        arrays = zip(weights, variables, before, allowed, strict=True)
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
    """train against Keras' train_on_batch on the same batches, with the dropout masks train
    draws given to Keras' twin: the same weights after every step, up to float64 rounding of
    matrix products summed in another order."""
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
        optimizer=make_optimizer(optimizer_params({"name": name, **KERAS_OPTIMIZERS[name]})),
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
    for ours, theirs in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert history["loss"][-1] < history["loss"][0]


# (d) Each update rule lowers the loss on an easy problem.


@pytest.mark.parametrize(
    ("make", "epochs"),
    [
        (lambda: SGD(learning_rate=0.1), 10),
        (RMSprop, 20),
        (lambda: SGD(learning_rate=0.05, momentum=0.9), 10),
        (Adam, 20),
    ],
    ids=["sgd", "rmsprop", "sgd_momentum", "adam"],
)
def test_every_update_rule_lowers_the_loss(make, epochs):
    x, y = separable_problem()
    weights = init_weights(np.random.default_rng(0), x.shape[1], [16])
    history = train(weights, x, y, epochs=epochs, batch_size=16, optimizer=make(), seed=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    final_loss, _, probabilities = loss_and_gradients(weights, x, y)
    assert final_loss < 0.5
    assert np.mean(probabilities.argmax(axis=1) == y.argmax(axis=1)) > 0.9


class Frozen:
    """An optimizer that leaves the weights alone, so every batch sees the same network."""

    def apply(self, weights, gradients) -> None:
        pass


class Recorder:
    def __init__(self):
        self.calls = []

    def on_epoch_end(self, epoch, logs):
        self.calls.append((epoch, logs))


def test_history_is_the_batch_size_weighted_mean_like_keras():
    # With weights that never change, the weighted mean over uneven batches (16, 16, 16, 2)
    # must equal the loss and accuracy of the whole data set.
    x, y = separable_problem(rows=50)
    weights = init_weights(np.random.default_rng(0), x.shape[1], [6], dtype=np.float64)
    recorder = Recorder()
    history = train(
        weights, x, y, epochs=2, batch_size=16, optimizer=Frozen(), seed=0, callbacks=[recorder]
    )
    full_loss, _, probabilities = loss_and_gradients(weights, x, y)
    full_accuracy = np.mean(probabilities.argmax(axis=1) == y.argmax(axis=1))
    assert history["loss"] == pytest.approx([full_loss] * 2, rel=1e-12)
    assert history["accuracy"] == pytest.approx([full_accuracy] * 2)
    assert [epoch for epoch, _ in recorder.calls] == [0, 1]
    assert recorder.calls[1][1] == {"loss": history["loss"][1], "accuracy": history["accuracy"][1]}


# (f) Training is reproducible from its seed.


@pytest.mark.parametrize("optimizer_class", [SGD, RMSprop])
def test_same_seed_same_weights_other_seed_other_weights(optimizer_class):
    x, y = separable_problem(rows=100)

    def trained(seed: int) -> list[np.ndarray]:
        weights = init_weights(np.random.default_rng(0), x.shape[1], [8])
        train(weights, x, y, epochs=2, batch_size=32, optimizer=optimizer_class(), seed=seed)
        return weights

    first, again, other = trained(1), trained(1), trained(2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


# Weights, initialisation and helpers.


def test_init_weights_is_glorot_uniform_with_zero_biases():
    hidden_kernel, hidden_bias, output_kernel, output_bias = init_weights(
        np.random.default_rng(0), 784, [512]
    )
    limit = math.sqrt(6 / (784 + 512))
    assert hidden_kernel.dtype == np.float32 and hidden_kernel.shape == (784, 512)
    assert np.abs(hidden_kernel).max() <= limit
    # A uniform distribution on [-limit, limit] has standard deviation limit / sqrt(3).
    assert hidden_kernel.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    assert np.abs(output_kernel).max() <= math.sqrt(6 / (512 + 10))
    assert not hidden_bias.any() and not output_bias.any()
    again = init_weights(np.random.default_rng(0), 784, [512])
    np.testing.assert_array_equal(hidden_kernel, again[0])


def test_make_optimizer_takes_the_params_settings():
    params = optimizer_params(
        {
            "name": "rmsprop",
            "learning_rate": 0.01,
            "rho": 0.9,
            "momentum": 0.0,
            "epsilon": 1e-7,
            "centered": True,
        }
    )
    optimizer = make_optimizer(params)
    assert isinstance(optimizer, RMSprop) and optimizer.centered and optimizer.rho == 0.9


def test_math_doc_examples_print_what_the_doc_says():
    math_doc = REPO_ROOT / "docs" / "math.md"
    results = doctest.testfile(str(math_doc), module_relative=False, verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} examples in {math_doc} are out of date"
