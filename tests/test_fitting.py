"""train's fitting loop: `fit_in_memory` computes what Keras computes batch by batch, on the
batches `epoch_orders` draws from the seed alone."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.modelling import fitting
from mnist_pipeline.modelling.network import build_model
from mnist_pipeline.params import load_params


@pytest.fixture
def tiny_train(prepared_tiny, tiny_params):
    features, targets = load_split(prepared_tiny["train"])
    return features, targets, load_params(tiny_params).train


def fresh_model(params, seed: int):
    fitting.seed_everything(seed)
    return build_model(params, input_dim=784)


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def test_epoch_orders_are_fresh_permutations_from_the_seed():
    orders = fitting.epoch_orders(10, seed=3)
    first, second = next(orders), next(orders)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first.dtype == np.int32 and not np.array_equal(first, second)
    again = fitting.epoch_orders(10, seed=3)
    np.testing.assert_array_equal(next(again), first)
    np.testing.assert_array_equal(next(again), second)
    assert not np.array_equal(next(fitting.epoch_orders(10, seed=4)), first)


@pytest.mark.parametrize("samples", [48, 42], ids=["whole-batches", "last-batch-smaller"])
def test_fit_in_memory_matches_keras_train_on_batch(tiny_train, samples):
    """One implementation checked against another: the compiled epoch loop against Keras'
    own `train_on_batch` on the same batches, in the same order, from the same weights."""
    features, targets, params = tiny_train
    features, targets = features[:samples], targets[:samples]
    batch_size, epochs = params.batch_size, params.epochs

    fast = fresh_model(params, seed=5)
    history = fitting.fit_in_memory(
        fast,
        features,
        targets,
        epochs=epochs,
        batch_size=batch_size,
        orders=fitting.epoch_orders(samples, seed=9),
        verbose=0,
    )

    reference = fresh_model(params, seed=5)
    expected: dict[str, list[float]] = {"loss": [], "accuracy": []}
    orders = fitting.epoch_orders(samples, seed=9)
    for _ in range(epochs):
        chunks = batches(next(orders), batch_size)
        logs = [
            reference.train_on_batch(features[chunk], targets[chunk], return_dict=True)
            for chunk in chunks
        ]
        # Keras' epoch metrics are means over samples: each batch weighs by its size.
        sizes = [len(chunk) for chunk in chunks]
        for name in expected:
            expected[name].append(float(np.average([log[name] for log in logs], weights=sizes)))

    steps_per_epoch = -(-samples // batch_size)
    assert int(fast.optimizer.iterations.numpy()) == epochs * steps_per_epoch
    for got, want in zip(fast.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert set(history) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(history[name], values, rtol=1e-4)


def test_fit_in_memory_with_a_batch_larger_than_the_data(tiny_train):
    features, targets, params = tiny_train
    model = fresh_model(params, seed=1)
    history = fitting.fit_in_memory(
        model,
        features,
        targets,
        epochs=2,
        batch_size=len(features) + 10,
        orders=fitting.epoch_orders(len(features), seed=1),
        verbose=0,
    )
    assert int(model.optimizer.iterations.numpy()) == 2
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]


def test_fit_in_memory_rejects_mismatched_arrays(tiny_train):
    features, targets, params = tiny_train
    with pytest.raises(ValueError, match="same, non-zero number of samples"):
        fitting.fit_in_memory(
            fresh_model(params, seed=1),
            features,
            targets[:-1],
            epochs=1,
            batch_size=16,
            orders=fitting.epoch_orders(len(features), seed=1),
        )


def misaligned(array: np.ndarray) -> np.ndarray:
    """A copy starting 16 bytes past a 64-byte boundary, where large NumPy arrays start."""
    buffer = np.empty(array.nbytes + 64 + 16, dtype=np.uint8)
    start = -buffer.ctypes.data % 64 + 16
    copy = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def test_tensorflow_ready_keeps_usable_arrays_and_aligns_the_rest():
    array = fitting.tensorflow_ready(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert array.ctypes.data % fitting.TENSORFLOW_ALIGNMENT == 0
    assert fitting.tensorflow_ready(array) is array  # Nothing to do: no copy.
    read_only = array.copy()
    read_only.flags.writeable = False
    empty = np.zeros((0, 784), np.float32)
    assert fitting.tensorflow_ready(empty) is empty  # TensorFlow does not check empty tensors.
    for awkward in (misaligned(array), array.T, read_only):
        ready = fitting.tensorflow_ready(awkward)
        assert ready.ctypes.data % fitting.TENSORFLOW_ALIGNMENT == 0
        assert ready.flags.c_contiguous and ready.flags.writeable
        np.testing.assert_array_equal(ready, awkward)


def test_shared_tensor_works_with_plain_tensorflow_ops():
    """TensorFlow aborts the whole process when an op reads a tensor aligned less than 64
    bytes; the shared tensor is fine outside XLA too (eagerly, as when debugging)."""
    import tensorflow as tf

    array = misaligned(np.random.default_rng(0).random((50, 784), dtype=np.float32))
    tensor = fitting._shared_tensor(array)
    np.testing.assert_allclose(tf.reduce_sum(tf.gather(tensor, [3, 7])), array[[3, 7]].sum(), 1e-5)


# --- Validation after each epoch, and callbacks ---------------------------------------------


@pytest.fixture
def tiny_validation(prepared_tiny):
    """The tiny test images, standing in for a validation split (16 rows: batches of 16 and
    of 10, so the last one is smaller)."""
    return load_split(prepared_tiny["test"])


def with_train(params, **changes):
    from mnist_pipeline.params import TrainParams

    return TrainParams.model_validate({**params.model_dump(), **changes})


class Recorder:
    """A callback with only Keras' on_epoch_end, as train_model's callbacks may be."""

    def __init__(self, then=None):
        self.calls: list[tuple[int, dict]] = []
        self.then = then

    def on_epoch_end(self, epoch, logs):
        self.calls.append((epoch, logs))
        if self.then is not None:
            self.then(epoch, logs)


@pytest.mark.parametrize("batch_size", [16, 10], ids=["whole-batches", "last-batch-smaller"])
def test_fit_in_memory_validates_as_keras_evaluate_does(tiny_train, tiny_validation, batch_size):
    """After every epoch val_loss and val_accuracy are those of `model.evaluate` on the split
    with the weights of that epoch, and the epoch's training metrics are what they are
    without validation."""
    features, targets, params = tiny_train
    val_features, val_targets = tiny_validation
    model = fresh_model(params, seed=5)
    evaluated = []

    def evaluate_now(epoch, logs):
        evaluated.append(
            model.evaluate(
                val_features, val_targets, batch_size=batch_size, verbose=0, return_dict=True
            )
        )

    recorder = Recorder(then=evaluate_now)
    history = fitting.fit_in_memory(
        model,
        features,
        targets,
        epochs=2,
        batch_size=batch_size,
        orders=fitting.epoch_orders(len(features), seed=9),
        verbose=0,
        validation=(val_features, val_targets),
        callbacks=[recorder],
    )
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    np.testing.assert_allclose(history["val_loss"], [e["loss"] for e in evaluated], rtol=1e-6)
    assert history["val_accuracy"] == pytest.approx([e["accuracy"] for e in evaluated])
    assert [epoch for epoch, _ in recorder.calls] == [0, 1]
    for name, values in history.items():
        assert [logs[name] for _, logs in recorder.calls] == values

    plain = fitting.fit_in_memory(
        fresh_model(params, seed=5),
        features,
        targets,
        epochs=2,
        batch_size=batch_size,
        orders=fitting.epoch_orders(len(features), seed=9),
        verbose=0,
    )
    assert plain == {name: history[name] for name in ("loss", "accuracy")}


def test_the_progress_bar_shows_the_validation_metrics(tiny_train, tiny_validation, capsys):
    features, targets, params = tiny_train
    fitting.fit_in_memory(
        fresh_model(params, seed=5),
        features,
        targets,
        epochs=1,
        batch_size=16,
        orders=fitting.epoch_orders(len(features), seed=9),
        validation=tiny_validation,
    )
    shown = capsys.readouterr().out
    assert "- loss:" in shown and "- val_loss:" in shown and "- val_accuracy:" in shown


@pytest.mark.parametrize("framework", ["keras", "numpy"])
@pytest.mark.parametrize("dropout", [0.0, 0.25], ids=["no-dropout", "dropout"])
def test_validation_never_changes_the_weights(tiny_train, tiny_validation, framework, dropout):
    from mnist_pipeline.data.mnist import weights_sha256

    features, targets, params = tiny_train
    params = with_train(params, framework=framework, dropout=dropout)
    plain, plain_history = fitting.train_model(features, targets, params, seed=3)
    validated, history = fitting.train_model(
        features, targets, params, seed=3, validation=tiny_validation
    )
    assert weights_sha256(validated.get_weights()) == weights_sha256(plain.get_weights())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert {name: history[name] for name in plain_history} == plain_history


@pytest.mark.parametrize("framework", ["keras", "numpy"])
def test_an_empty_validation_split_is_no_validation(tiny_train, framework):
    features, targets, params = tiny_train
    empty = (np.zeros((0, 784), np.float32), np.zeros((0, 10), np.float32))
    recorder = Recorder()
    _, history = fitting.train_model(
        features,
        targets,
        with_train(params, framework=framework),
        seed=3,
        validation=empty,
        callbacks=[recorder],
    )
    assert set(history) == {"loss", "accuracy"}
    assert [sorted(logs) for _, logs in recorder.calls] == [["accuracy", "loss"]] * 2


def test_numpy_framework_validates_as_numpy_and_keras_compute_it(tiny_train, tiny_validation):
    """The from-scratch training's val metrics, after its last epoch, against an independent
    NumPy computation on the weights it ends with (probabilities, clipped cross-entropy) and
    against Keras' evaluate of the model holding them."""
    from mnist_pipeline.modelling.mlp import MLPWeights, categorical_crossentropy, predict_proba

    features, targets, params = tiny_train
    val_features, val_targets = tiny_validation
    recorder = Recorder()
    model, history = fitting.train_model(
        features,
        targets,
        with_train(params, framework="numpy"),
        seed=3,
        validation=tiny_validation,
        callbacks=[recorder],
    )
    weights = MLPWeights.from_keras_list(model.get_weights())
    probabilities = predict_proba(weights, val_features)
    loss = categorical_crossentropy(val_targets, probabilities)
    accuracy = np.mean(probabilities.argmax(axis=1) == val_targets.argmax(axis=1))
    assert history["val_loss"][-1] == pytest.approx(loss, rel=1e-6)
    assert history["val_accuracy"][-1] == accuracy
    keras_says = model.evaluate(val_features, val_targets, verbose=0, return_dict=True)
    assert history["val_loss"][-1] == pytest.approx(keras_says["loss"], rel=1e-5)
    assert history["val_accuracy"][-1] == pytest.approx(keras_says["accuracy"])
    assert [epoch for epoch, _ in recorder.calls] == [0, 1]
    for name, values in history.items():
        assert [logs[name] for _, logs in recorder.calls] == values


class Pruned(Exception):
    """Stands in for optuna.TrialPruned."""


@pytest.mark.parametrize("framework", ["keras", "numpy"])
def test_what_a_callback_raises_stops_training_and_propagates(
    tiny_train, tiny_validation, framework
):
    features, targets, params = tiny_train

    def prune(epoch, logs):
        assert "val_accuracy" in logs
        raise Pruned(f"epoch {epoch}")

    recorder = Recorder(then=prune)
    with pytest.raises(Pruned, match="epoch 0"):
        fitting.train_model(
            features,
            targets,
            with_train(params, framework=framework),
            seed=3,
            validation=tiny_validation,
            callbacks=[recorder],
        )
    assert len(recorder.calls) == 1
