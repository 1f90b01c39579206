"""train_model: Keras' `model.fit` or the portable NumPy trainer, the same seed giving the same
weights, validation after each epoch, and callbacks."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.data.mnist import weights_sha256
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.modelling import fitting
from mnist_pipeline.params import TrainParams, load_params


@pytest.fixture
def tiny_train(prepared_tiny, tiny_params):
    features, targets = load_split(prepared_tiny["train"])
    return features, targets, load_params(tiny_params).train


@pytest.fixture
def tiny_validation(prepared_tiny):
    """The tiny test images, standing in for a validation split."""
    return load_split(prepared_tiny["test"])


def with_train(params, **changes):
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


@pytest.mark.parametrize("dropout", [0.0, 0.25], ids=["xla", "dropout"])
def test_the_seed_alone_decides_the_weights(tiny_train, dropout):
    features, targets, params = tiny_train
    params = with_train(params, dropout=dropout)
    first, history = fitting.train_model(features, targets, params, seed=3)
    again, _ = fitting.train_model(features, targets, params, seed=3)
    other, _ = fitting.train_model(features, targets, params, seed=4)
    assert weights_sha256(again.get_weights()) == weights_sha256(first.get_weights())
    assert weights_sha256(other.get_weights()) != weights_sha256(first.get_weights())
    assert len(history["loss"]) == params.epochs


def test_keras_validates_each_epoch_as_its_evaluate_does(tiny_train, tiny_validation):
    """The last epoch's val_loss and val_accuracy are `model.evaluate`'s on the split with the
    weights trained; each callback sees every epoch's metrics, 0-based."""
    features, targets, params = tiny_train
    recorder = Recorder()
    model, history = fitting.train_model(
        features, targets, params, seed=5, validation=tiny_validation, callbacks=[recorder]
    )
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    evaluated = model.evaluate(*tiny_validation, verbose=0, return_dict=True)
    assert history["val_loss"][-1] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert history["val_accuracy"][-1] == pytest.approx(evaluated["accuracy"])
    assert [epoch for epoch, _ in recorder.calls] == [0, 1]
    for name, values in history.items():
        assert [logs[name] for _, logs in recorder.calls] == pytest.approx(values)


def test_the_progress_bar_shows_the_validation_metrics(tiny_train, tiny_validation, capsys):
    features, targets, params = tiny_train
    fitting.train_model(features, targets, params, seed=5, validation=tiny_validation)
    shown = capsys.readouterr().out
    assert "- loss:" in shown and "- val_loss:" in shown and "- val_accuracy:" in shown


@pytest.mark.parametrize("framework", ["keras", "numpy"])
@pytest.mark.parametrize("dropout", [0.0, 0.25], ids=["no-dropout", "dropout"])
def test_validation_never_changes_the_weights(tiny_train, tiny_validation, framework, dropout):
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
    from mnist_pipeline.modelling.mlp import categorical_crossentropy, predict_proba

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
    probabilities = predict_proba(model.get_weights(), val_features, ["relu", "softmax"])
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
