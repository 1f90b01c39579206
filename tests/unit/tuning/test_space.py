"""The tune section of params.yaml: strict validation with one-line errors naming the key, real
Optuna suggestions inside the space, and `dvc exp run -S` overrides that DVC's own parser reads
back as exactly the values a trial trained with."""

from __future__ import annotations

import copy
import json
import re

import pytest
from ruamel.yaml import YAML

from conftest import REPO_ROOT, write_params
from mnist_pipeline.commands import cli
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import PrepareParams, load_params, parse_params
from mnist_pipeline.tuning.space import (
    Distribution,
    encoded_defaults,
    final_overrides,
    parse_tune,
    require_training_images,
    suggest,
    trial_params,
    with_values,
)

# prepare.validation_samples arrives with the validation split (issue 11's other half).
needs_validation_split = pytest.mark.skipif(
    "validation_samples" not in PrepareParams.model_fields,
    reason="prepare.validation_samples is not in this branch yet",
)


def test_the_committed_section_parses_to_a_sensible_search():
    tune = parse_tune(load_params(REPO_ROOT / "params.yaml"))
    assert (tune.trials, tune.validation_samples) == (20, 10000)
    assert (tune.sampler, tune.pruner) == ("tpe", "median")
    space = tune.space
    assert space["train.optimizer.learning_rate"] == Distribution("log_uniform", (2e-4, 5e-3))
    assert space["train.hidden_units"] == Distribution("choice", (256, 512, 1024, [512, 256]))
    assert space["train.epochs"] == Distribution("int", (5, 20))
    # The chapter's own setting is inside the space, so the search can only do better.
    chapter = load_params(REPO_ROOT / "params.yaml").train
    learning_rate = space["train.optimizer.learning_rate"]
    low, high = learning_rate.values
    assert low <= chapter.optimizer.learning_rate <= high
    assert chapter.batch_size in space["train.batch_size"].values
    assert chapter.hidden_units in space["train.hidden_units"].values
    assert space["train.epochs"].values[0] <= chapter.epochs <= space["train.epochs"].values[1]
    assert space["train.dropout"].values[0] == chapter.dropout


def test_a_raw_tree_and_parsed_params_give_the_same_section(params_tree):
    assert parse_tune(params_tree) == parse_tune(parse_params(params_tree))


def test_params_without_a_tune_section_parse_and_flat_leaves_it_out(params_tree):
    with_tune = parse_params(params_tree)
    assert not any(key.startswith("tune") for key in with_tune.flat())
    del params_tree["tune"]
    old = parse_params(params_tree)
    assert old.tune is None and old.flat() == with_tune.flat()
    with pytest.raises(PipelineError, match=r"^params.yaml: tune: missing; add a tune section"):
        parse_tune(old)


def _space(tree: dict, **entries) -> dict:
    tree["tune"]["space"] = {key.replace("__", "."): value for key, value in entries.items()}
    return tree


BAD = [
    (
        lambda t: _space(t, train__optimizer__rho={"uniform": [0.8, 1.2]}),
        "tune.space.train.optimizer.rho: uniform [0.8, 1.2]: 1.2 is not allowed for "
        "train.optimizer.rho (input should be less than 1)",
    ),
    (
        lambda t: _space(t, train__hiden_units={"choice": [256, 512]}),
        "tune.space.train.hiden_units: unknown param (did you mean 'train.hidden_units'?)",
    ),
    (
        lambda t: _space(t, train__batch_size={"choice": []}),
        "tune.space.train.batch_size: choice needs a non-empty list of values",
    ),
    (
        lambda t: _space(t, train__batch_size={"choice": [64, 128, 64]}),
        "tune.space.train.batch_size: choice [64, 128, 64] has 64 twice",
    ),
    (
        lambda t: _space(t, train__hidden_units={"choice": [512, [512, 0]]}),
        "tune.space.train.hidden_units: choice [512, [512, 0]]: [512, 0] is not allowed for "
        "train.hidden_units (input should be a valid integer from 1 to 65536 (one hidden layer) "
        "or a non-empty list of them (one hidden layer each, e.g. [512, 256]))",
    ),
    (
        lambda t: _space(t, train__optimizer__learning_rate={"log_uniform": [0.01, 0.001]}),
        "tune.space.train.optimizer.learning_rate: low 0.01 > high 0.001",
    ),
    (
        lambda t: _space(t, train__optimizer__learning_rate={"log_uniform": [0, 0.01]}),
        "tune.space.train.optimizer.learning_rate: log_uniform needs low > 0, got 0.0",
    ),
    (
        lambda t: _space(t, train__epochs={"int": [3.5, 15]}),
        "tune.space.train.epochs: int needs [low, high], two integers, got [3.5, 15]",
    ),
    (
        lambda t: _space(t, train__epochs={"uniform": [3, 15]}),
        "tune.space.train.epochs: uniform [3, 15]: 3.0 is not allowed for train.epochs "
        "(input should be a valid integer)",
    ),
    (
        lambda t: _space(t, train__epochs={"normal": [5, 1]}),
        "tune.space.train.epochs: expected one of {uniform: ..., log_uniform: ..., int: ..., "
        "log_int: ..., choice: ...}, e.g. {int: [3, 15]}, got {'normal': [5, 1]}",
    ),
    (
        lambda t: _space(t, train__optimizer__name={"choice": ["rmsprop", "adam"]}),
        "tune.space.train.optimizer.name: not searchable: the optimizers take different "
        "settings; tune one optimizer per study, set in params.yaml's train.optimizer",
    ),
    (
        lambda t: _space(t, train__optimizer={"choice": [{"name": "sgd"}]}),
        "tune.space.train.optimizer: a section, not a param; vary its settings: "
        "train.optimizer.name, train.optimizer.learning_rate, train.optimizer.rho, "
        "train.optimizer.momentum, train.optimizer.epsilon, train.optimizer.centered",
    ),
    (
        lambda t: _space(t, train__optimizer__beta_1={"uniform": [0.8, 0.9]}),
        "tune.space.train.optimizer.beta_1: unknown param; optimizer 'rmsprop' takes: "
        "learning_rate, rho, momentum, epsilon, centered",
    ),
    (
        lambda t: _space(t, train__optimizer__learning_rat={"uniform": [0.8, 0.9]}),
        "tune.space.train.optimizer.learning_rat: unknown param (did you mean "
        "'train.optimizer.learning_rate'?); optimizer 'rmsprop' takes: ",
    ),
    (
        lambda t: _space(t, prepare__validation_samples={"int": [1000, 5000]}),
        "tune.space.prepare.validation_samples: not searchable: tune.validation_samples sets "
        "it for every trial",
    ),
    (
        lambda t: _space(t, base__seed={"int": [0, 9]}),
        "tune.space.base.seed: not searchable: the space varies train.* and prepare.* params only",
    ),
    (
        lambda t: _space(t, train__epochs={"int": [3, 15]}, train__dropout={"uniform": [0, 1]}),
        "tune.space.train.dropout: uniform [0, 1]: 1.0 is not allowed for train.dropout "
        "(input should be less than 1)",
    ),
    (lambda t: _space(t), "tune.space: expected a mapping of params to distributions"),
    (
        lambda t: t["tune"].update(sampler="grid"),
        "tune.sampler: input should be 'tpe' or 'random', got 'grid'",
    ),
    (
        lambda t: t["tune"].update(pruner="hyperband"),
        "tune.pruner: input should be 'median' or 'none', got 'hyperband'",
    ),
    (
        lambda t: t["tune"].update(trials=0),
        "tune.trials: input should be greater than or equal to 1, got 0",
    ),
    (
        lambda t: t["tune"].update(trials="20"),
        "tune.trials: input should be a valid integer, got '20'",
    ),
    (
        lambda t: t["tune"].update(validation_samples=0),
        "tune.validation_samples: input should be greater than or equal to 1, got 0",
    ),
    (
        lambda t: t["tune"].update(trails=20),
        "tune.trails: unknown key (did you mean 'trials'?); allowed: trials, "
        "validation_samples, sampler, pruner, space",
    ),
    (
        lambda t: t["tune"].pop("pruner"),
        "tune.pruner: missing; add it (git show HEAD:params.yaml has every key)",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[message for _, message in BAD])
def test_a_bad_section_is_one_line_naming_the_key(params_tree, change, message):
    change(params_tree)
    with pytest.raises(PipelineError) as raised:
        parse_tune(params_tree)
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"params.yaml: {message}"), text


def test_every_bad_entry_of_a_space_is_named(params_tree):
    _space(params_tree, train__epochs={"int": [0, 5]}, train__batch_size={"choice": []})
    with pytest.raises(PipelineError) as raised:
        parse_tune(params_tree)
    assert "tune.space.train.epochs: int [0, 5]: 0 is not allowed" in str(raised.value)
    assert "; tune.space.train.batch_size: choice needs a non-empty list" in str(raised.value)


def test_a_validation_split_as_large_as_the_training_images_is_refused_for_tuning(params_tree):
    """Not by parse_tune: a quick pipeline run's small prepare.train_samples is no error of the
    section; `mnist-pipeline tune` checks it before it starts, and check-params notes it."""
    params_tree["prepare"]["train_samples"] = 1000
    params_tree["tune"]["validation_samples"] = 1000
    params = parse_params(params_tree)
    tune = parse_tune(params)  # the section itself is fine
    with pytest.raises(PipelineError) as raised:
        require_training_images(params, tune)
    assert str(raised.value) == (
        "params.yaml: tune.validation_samples: 1000 leaves no training images; it must be less "
        "than the 1000 kept (prepare.train_samples)"
    )
    params_tree["tune"]["validation_samples"] = 999
    require_training_images(parse_params(params_tree), parse_tune(params_tree))


def test_check_params_notes_a_study_that_could_not_run_but_passes(tmp_path, params_tree, capsys):
    params_tree["prepare"]["train_samples"] = 3000
    path = write_params(tmp_path / "params.yaml", params_tree)
    cli.main(["--params", str(path), "check-params"])
    shown = capsys.readouterr().out.splitlines()
    assert shown[-2] == f"{path}: OK"
    assert shown[-1].startswith("note: `mnist-pipeline tune` would refuse these params: ")
    assert "tune.validation_samples: 10000 leaves no training images" in shown[-1]


def test_check_params_validates_the_tune_section(tmp_path, params_tree, capsys):
    path = write_params(tmp_path / "params.yaml", params_tree)
    cli.main(["--params", str(path), "check-params"])
    shown = capsys.readouterr().out
    assert "tune.space.train.hidden_units = {choice: [256, 512, 1024, [512, 256]]}" in shown
    assert "tune.trials = 20" in shown
    params_tree["tune"]["sampler"] = "grid"
    write_params(path, params_tree)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--params", str(path), "check-params"])
    assert exited.value.code == 2
    assert "error: " in capsys.readouterr().err


# --- Optuna ----------------------------------------------------------------------------------

EVERY_KIND = {
    "train.optimizer.learning_rate": {"log_uniform": [1e-4, 1e-2]},
    "train.optimizer.rho": {"uniform": [0.8, 0.99]},
    "train.batch_size": {"log_int": [16, 256]},
    "train.epochs": {"int": [1, 3]},
    "train.hidden_units": {"choice": [16, [16, 8], [32, 16, 8]]},
    "train.activation": {"choice": ["relu", "tanh"]},
}


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_suggestions_stay_in_the_space_and_lists_come_back_as_lists(params_tree, sampler):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params_tree["tune"]["space"] = EVERY_KIND
    params = parse_params(params_tree)
    space = parse_tune(params).space
    samplers = {
        # Two random trials, then TPE's own model, so its sampling of each kind is exercised.
        "tpe": optuna.samplers.TPESampler(n_startup_trials=2, seed=0),
        "random": optuna.samplers.RandomSampler(seed=0),
    }
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler])
    suggested = []

    def objective(trial):
        values = suggest(trial, space)
        suggested.append(values)
        with_values(params, values)  # every suggestion is a valid params file
        return values["train.optimizer.learning_rate"] * len(str(values["train.hidden_units"]))

    study.optimize(objective, n_trials=12)
    for values, trial in zip(suggested, study.trials, strict=True):
        assert 1e-4 <= values["train.optimizer.learning_rate"] <= 1e-2
        assert 0.8 <= values["train.optimizer.rho"] <= 0.99
        assert 16 <= values["train.batch_size"] <= 256 and type(values["train.batch_size"]) is int
        assert values["train.epochs"] in (1, 2, 3)
        assert values["train.hidden_units"] in (16, [16, 8], [32, 16, 8])
        assert values["train.activation"] in ("relu", "tanh")
        # Optuna shows each width list as written.
        assert trial.params["train.hidden_units"] == json.dumps(values["train.hidden_units"])
        assert trial.params["train.activation"] in ("relu", "tanh")
    assert len({str(values["train.hidden_units"]) for values in suggested}) > 1


def test_a_suggested_list_is_a_copy_not_the_space_itself(params_tree):
    params_tree["tune"]["space"] = {"train.hidden_units": {"choice": [[16, 8]]}}
    import optuna

    space = parse_tune(params_tree).space
    suggested = suggest(optuna.create_study().ask(), space)
    suggested["train.hidden_units"].append(4)
    assert space["train.hidden_units"].values == ([16, 8],)


def test_the_defaults_enqueued_in_optuna_come_back_as_params_yaml_holds_them(params_tree):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params_tree["tune"]["space"] = EVERY_KIND
    params_tree["train"].update(hidden_units=[16, 8], epochs=2, batch_size=128)
    params = parse_params(params_tree)
    space = parse_tune(params).space
    encoded = encoded_defaults(params, space)
    assert encoded["train.hidden_units"] == "[16, 8]"  # as Optuna stores the choice
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(encoded)
    values = suggest(study.ask(), space)
    assert values == {
        "train.optimizer.learning_rate": params.train.optimizer.learning_rate,
        "train.optimizer.rho": params.train.optimizer.rho,
        "train.batch_size": 128,
        "train.epochs": 2,
        "train.hidden_units": [16, 8],
        "train.activation": params.train.activation,
    }


def test_the_committed_defaults_are_a_trial_of_the_committed_space(default_params):
    """Else a study has no baseline, and its answer no margin over the defaults."""
    params = parse_params(default_params)
    assert set(encoded_defaults(params, parse_tune(params).space)) == set(params.tune["space"])


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.epochs": {"int": [1, 3]}}, "train.epochs: params.yaml's 5 is outside {int: "),
        ({"train.hidden_units": {"choice": [16, [16, 8]]}}, "512 is outside {choice: [16, [16"),
        (
            {"train.optimizer.learning_rate": {"log_uniform": [1e-2, 1e-1]}},
            "0.001 is outside {log_uniform: [0.01, 0.1]}",
        ),
    ],
)
def test_defaults_outside_the_space_are_named(params_tree, space, message):
    params_tree["tune"]["space"] = space
    params = parse_params(params_tree)
    with pytest.raises(ValueError, match=re.escape(message)):
        encoded_defaults(params, parse_tune(params).space)


# --- A trial's params, and the DVC experiment that reproduces it ----------------------------

VALUES = {
    "train.optimizer.learning_rate": 1.2345678901234567e-05,
    "train.optimizer.rho": 0.1 + 0.2,  # 0.30000000000000004: repr, not str(round())
    "train.optimizer.epsilon": 1e-07,
    "train.optimizer.centered": True,
    "train.dropout": 0.0,
    "train.epochs": 7,
    "train.batch_size": 64,
    "train.hidden_units": [512, 256],
    "train.activation": "tanh",
}


@needs_validation_split
def test_trial_params_apply_the_values_and_the_validation_split(params_tree):
    params = parse_params(params_tree)
    tune = parse_tune(params)
    trial = trial_params(params, tune, VALUES)
    assert trial.prepare.validation_samples == 10000
    assert trial.train.widths == (512, 256) and trial.train.optimizer.centered is True
    assert trial.train.optimizer.learning_rate == VALUES["train.optimizer.learning_rate"]
    assert trial.tune == params.tune and params.train.hidden_units == 512


def test_with_values_validates_what_it_builds(params_tree):
    params = parse_params(params_tree)
    assert with_values(params, {"train.epochs": 9}).train.epochs == 9
    with pytest.raises(PipelineError, match="train.epochs: input should be greater than or"):
        with_values(params, {"train.epochs": 0})


def _dvc_set(params_file, overrides: list[str]) -> dict:
    """What `dvc exp run -S o1 -S o2 ...` writes into params.yaml, through DVC's own code: its
    grouping of -S values by file, and its Hydra override parser and applier."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides, to_hydra_overrides

    grouped = to_path_overrides(overrides)
    assert list(grouped) == ["params.yaml"]
    # None of them would make `dvc exp run` a sweep (which needs --queue).
    assert not any(o.is_sweep_override() for o in to_hydra_overrides(grouped["params.yaml"]))
    apply_overrides(params_file, grouped["params.yaml"])
    return YAML(typ="safe", pure=True).load(params_file.read_text())


def _value(tree: dict, name: str):
    for part in name.split("."):
        tree = tree[part]
    return tree


def test_dvc_reads_the_set_arguments_back_as_exactly_the_values(tmp_path, params_tree, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVC names the file relative to the working directory.
    params_tree["prepare"]["validation_samples"] = 100  # a study's split, retrained on all
    written = _dvc_set(
        write_params(tmp_path / "params.yaml", copy.deepcopy(params_tree)), final_overrides(VALUES)
    )
    expected = {**VALUES, "prepare.validation_samples": 0}
    for name, value in expected.items():
        assert _value(written, name) == value and type(_value(written, name)) is type(value), name
    # Everything else is untouched, the tune section included.
    for section in ("base", "fetch", "evaluate", "mlflow", "tune"):
        assert written[section] == params_tree[section]


def test_the_overrides_read_as_written():
    overrides = final_overrides({"train.hidden_units": [512, 256], "train.epochs": 7})
    assert overrides == [
        "train.hidden_units=[512, 256]",
        "train.epochs=7",
        "prepare.validation_samples=0",
    ]
    assert final_overrides({"train.optimizer.learning_rate": 0.00123}) == [
        "train.optimizer.learning_rate=0.00123",
        "prepare.validation_samples=0",
    ]
