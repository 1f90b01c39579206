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
