"""params.yaml is validated once, strictly, with one-line errors that name the key."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from conftest import REPO_ROOT, write_params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import load_params, parse_params


def test_committed_params_are_valid_and_match_the_chapter():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.train.hidden_units == 512
    assert params.train.activation == "relu"
    assert (params.train.epochs, params.train.batch_size) == (5, 128)
    optimizer = params.train.optimizer
    assert (optimizer.name, optimizer.learning_rate, optimizer.rho) == ("rmsprop", 0.001, 0.9)
    assert (optimizer.momentum, optimizer.epsilon, optimizer.centered) == (0.0, 1e-7, False)
    assert params.fetch.source == "auto" and params.prepare.train_samples is None
    assert params.prepare.validation_samples == 0  # All 60,000 images train, as in the chapter.
    # The chapter's one hidden layer, without dropout.
    assert params.train.widths == (512,) and params.train.dropout == 0.0


SGD = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}
ADAM = {
    "name": "adam",
    "learning_rate": 0.001,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-7,
    "amsgrad": False,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"hidden_units": [512, 256]}, lambda t: t.widths == (512, 256)),
        ({"hidden_units": 64}, lambda t: t.widths == (64,) and t.hidden_units == 64),
        ({"dropout": 0.2}, lambda t: t.dropout == 0.2),
        ({"dropout": 0}, lambda t: t.dropout == 0.0),
        ({"optimizer": SGD}, lambda t: (t.optimizer.name, t.optimizer.nesterov) == ("sgd", True)),
        ({"optimizer": ADAM}, lambda t: (t.optimizer.name, t.optimizer.beta_2) == ("adam", 0.999)),
    ],
    ids=["two-layers", "one-width", "dropout", "dropout-int-0", "sgd", "adam"],
)
def test_network_options_parse(params_tree, changes, expected):
    params_tree["train"].update(changes)
    assert expected(parse_params(params_tree).train)


def test_dropout_defaults_to_zero_and_lists_are_logged_as_written(params_tree):
    del params_tree["train"]["dropout"]
    params_tree["train"]["hidden_units"] = [32, 16]
    params = parse_params(params_tree)
    assert params.train.dropout == 0.0
    assert params.flat()["train.hidden_units"] == [32, 16]
    params_tree["train"]["optimizer"] = SGD
    flat = parse_params(params_tree).flat()
    assert {k for k in flat if k.startswith("train.optimizer.")} == {
        f"train.optimizer.{key}" for key in SGD
    }


def test_flat_names_nested_keys_with_dots(params_tree):
    flat = parse_params(params_tree).flat()
    assert flat["train.optimizer.learning_rate"] == 0.001
    assert flat["base.seed"] == 42


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


def _delete(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    del tree[leaf]


BAD_VALUES = [
    # (key, value, words the message must contain)
    ("train.epochs", 0, ["train.epochs", "greater than or equal to 1"]),
    ("train.epochs", "5", ["train.epochs", "valid integer"]),
    ("train.epochs", 2.5, ["train.epochs", "valid integer"]),
    ("train.batch_size", 0, ["train.batch_size", "greater than or equal to 1"]),
    ("train.batch_size", True, ["train.batch_size", "valid integer"]),
    ("train.hidden_units", -3, ["train.hidden_units"]),
    ("train.activation", "relux", ["train.activation", "'relu'", "'tanh'", "'sigmoid'"]),
    ("train.framework", "pytorch", ["train.framework", "'keras'", "'numpy'"]),
    ("train.threads", 0, ["train.threads", "greater than or equal to 1"]),
    ("train.threads", 65, ["train.threads", "less than or equal to 64"]),
    ("train.threads", "2", ["train.threads", "valid integer"]),
    ("train.optimizer.name", "adamw", ["train.optimizer.name", "'rmsprop', 'sgd' or 'adam'"]),
    ("train.optimizer.name", None, ["train.optimizer.name", "'rmsprop', 'sgd' or 'adam'"]),
    ("train.hidden_units", [512, 0], ["train.hidden_units", "[512, 256]", "got [512, 0]"]),
    ("train.hidden_units", [], ["train.hidden_units", "non-empty list"]),
    ("train.hidden_units", [64, 2.5], ["train.hidden_units", "valid integer"]),
    ("train.hidden_units", 70000, ["train.hidden_units", "65536"]),
    ("train.hidden_units", "512", ["train.hidden_units", "valid integer"]),
    ("train.dropout", 1.0, ["train.dropout", "less than 1"]),
    ("train.dropout", -0.1, ["train.dropout", "greater than or equal to 0"]),
    ("train.dropout", "0.2", ["train.dropout", "valid number"]),
    ("train.optimizer", "adam", ["train.optimizer", "valid dictionary"]),
    ("train.optimizer.learning_rate", 0, ["train.optimizer.learning_rate", "greater than 0"]),
    ("train.optimizer.learning_rate", -0.1, ["train.optimizer.learning_rate"]),
    ("train.optimizer.learning_rate", "fast", ["train.optimizer.learning_rate", "valid number"]),
    ("train.optimizer.rho", 1.0, ["train.optimizer.rho", "less than 1"]),
    ("train.optimizer.rho", -0.5, ["train.optimizer.rho", "greater than or equal to 0"]),
    ("train.optimizer.epsilon", 0.0, ["train.optimizer.epsilon", "greater than 0"]),
    ("train.optimizer.momentum", -0.1, ["train.optimizer.momentum"]),
    ("train.optimizer.centered", "no", ["train.optimizer.centered", "valid boolean"]),
    ("base.seed", -1, ["base.seed"]),
    ("fetch.source", "s3", ["fetch.source", "'auto'", "'keras'", "'mirror'", "'file'"]),
    ("prepare.train_samples", 0, ["prepare.train_samples"]),
    ("prepare.train_samples", 60001, ["prepare.train_samples", "60000"]),
    ("prepare.test_samples", 10001, ["prepare.test_samples", "10000"]),
    ("prepare.validation_samples", -1, ["prepare.validation_samples", "greater than or equal"]),
    ("prepare.validation_samples", 1.5, ["prepare.validation_samples", "valid integer"]),
    ("prepare.validation_samples", 60000, ["prepare.validation_samples: 60000 leaves no", "60000"]),
    ("evaluate.batch_size", 0, ["evaluate.batch_size"]),
    ("mlflow.experiment_name", "", ["mlflow.experiment_name"]),
    ("train.epochs", None, ["train.epochs"]),
]


@pytest.mark.parametrize(("key", "value", "words"), BAD_VALUES, ids=lambda v: str(v)[:30])
def test_bad_values_name_the_key_and_what_is_allowed(params_tree, key, value, words):
    _set(params_tree, key, value)
    with pytest.raises(PipelineError) as caught:
        parse_params(params_tree)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_validation_must_leave_training_images_naming_both_keys(params_tree):
    params_tree["prepare"].update(train_samples=5000, validation_samples=5000)
    with pytest.raises(PipelineError) as caught:
        parse_params(params_tree)
    message = str(caught.value)
    assert "\n" not in message
    assert "prepare.validation_samples: 5000" in message
    assert "prepare.train_samples (5000 kept)" in message
    params_tree["prepare"]["validation_samples"] = 4999
    assert parse_params(params_tree).prepare.validation_samples == 4999


def test_params_of_runs_before_the_validation_split_still_parse(params_tree):
    """Older runs logged params.yaml without prepare.validation_samples: no validation."""
    del params_tree["prepare"]["validation_samples"]
    assert parse_params(params_tree).prepare.validation_samples == 0


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("train.epoch", 5, ["train.epoch: unknown key", "did you mean 'epochs'", "batch_size"]),
        ("train.optimizer.learnig_rate", 0.1, ["did you mean 'learning_rate'"]),
        ("trian", {}, ["trian: unknown key", "did you mean 'train'"]),
        ("fetch.extra", 1, ["fetch.extra: unknown key", "allowed: source, path"]),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(params_tree, key, value, words):
    _set(params_tree, key, value)
    with pytest.raises(PipelineError) as caught:
        parse_params(params_tree)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(
    ("optimizer", "key", "value", "words"),
    [
        (None, "name", "adam", ["train.optimizer.beta_1: missing", "train.optimizer.rho: unknown"]),
        (SGD, "rho", 0.9, ["train.optimizer.rho: unknown key", "takes exactly: learning_rate, "]),
        (SGD, "momentum", 1.0, ["train.optimizer.momentum", "less than 1"]),
        (SGD, "nesterov", "yes", ["train.optimizer.nesterov", "valid boolean"]),
        (ADAM, "centered", False, ["train.optimizer.centered: unknown key", "amsgrad"]),
        (ADAM, "beta_1", 1.0, ["train.optimizer.beta_1", "less than 1"]),
        (ADAM, "beta_2", -0.5, ["train.optimizer.beta_2", "greater than or equal to 0"]),
        (ADAM, "epsilon", 0.0, ["train.optimizer.epsilon", "greater than 0"]),
        (ADAM, "amsgrad", 1, ["train.optimizer.amsgrad", "valid boolean"]),
        (ADAM, "learning_rate", 0, ["train.optimizer.learning_rate", "greater than 0"]),
        (ADAM, "beta1", 0.9, ["train.optimizer.beta1: unknown key (did you mean 'beta_1'?)"]),
    ],
)
def test_each_optimizer_takes_exactly_its_own_settings(params_tree, optimizer, key, value, words):
    if optimizer is not None:
        params_tree["train"]["optimizer"] = dict(optimizer)
    params_tree["train"]["optimizer"][key] = value
    with pytest.raises(PipelineError) as caught:
        parse_params(params_tree)
    message = str(caught.value)
    assert "\n" not in message and ".adam." not in message and ".sgd." not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("key", ["train", "mlflow", "train.optimizer.rho", "base.seed"])
def test_missing_sections_and_keys_are_errors(params_tree, key):
    _delete(params_tree, key)
    with pytest.raises(PipelineError, match=f"{key}: missing"):
        parse_params(params_tree)


def test_file_source_needs_a_path(params_tree):
    params_tree["fetch"]["source"] = "file"
    with pytest.raises(PipelineError, match="fetch.path is required"):
        parse_params(params_tree)


def test_yaml_floats_follow_yaml_1_2_like_dvc(tmp_path, params_tree):
    path = write_params(tmp_path / "params.yaml", params_tree)
    path.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3"))
    assert load_params(path).train.optimizer.learning_rate == 0.001


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 42\ntrain: [unclosed\n")
    with pytest.raises(PipelineError, match=r"YAML syntax error at line \d+"):
        load_params(path)


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_params(tmp_path / "empty.yaml")


def test_dvc_yaml_declares_what_train_logs():
    """train logs the params sections it depends on; dvc.yaml must declare the same ones."""
    from mnist_pipeline.tracking.train_logging import LOGGED_SECTIONS

    stages = YAML(typ="safe", pure=True).load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    declared = set(stages["train"]["params"])
    for section in LOGGED_SECTIONS:
        assert any(item.startswith(section.rstrip(".")) for item in declared), section
