"""params.yaml's `tune` section (budget, validation split, sampler, pruner and search space),
validated against the params it varies, and what a trial's values become. A space maps a param
to `{uniform|log_uniform|int|log_int: [low, high]}` or `{choice: [value, ...]}`."""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mnist_pipeline.data.mnist import MNIST_TRAIN_SIZE
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params, parse_params

VALIDATION_PARAM = "prepare.validation_samples"
SEARCHABLE_SECTIONS = ("train", "prepare")
# Params a space may not vary, and why (each is one line of the error). Not base.seed either:
# choosing the luckiest seed on the validation split tunes on noise.
NOT_SEARCHABLE = {
    "train.optimizer.name": "the optimizers take different settings; tune one optimizer per "
    "study, set in params.yaml's train.optimizer",
    VALIDATION_PARAM: "tune.validation_samples sets it for every trial",
    "prepare.train_samples": "it changes which images train and validate (the last ones "
    "kept), so trials would not compare",
    "prepare.test_samples": "it changes only the test set, which never chooses",
}
KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")


@dataclass(frozen=True)
class Distribution:
    """One param's distribution: a range's (low, high) or a choice's values."""

    kind: str
    values: tuple

    def __str__(self) -> str:
        return f"{{{self.kind}: [{', '.join(json.dumps(value) for value in self.values)}]}}"

    @property
    def options(self) -> tuple:
        """What Optuna chooses among: the values, or their JSON texts if one is not a scalar."""
        if all(isinstance(value, None | bool | int | float | str) for value in self.values):
            return self.values
        return tuple(json.dumps(value) for value in self.values)

    def suggest(self, trial, name: str) -> object:
        if self.kind == "choice":
            chosen = trial.suggest_categorical(name, self.options)
            return copy.deepcopy(self.values[self.options.index(chosen)])
        low, high = self.values
        suggest = trial.suggest_float if "uniform" in self.kind else trial.suggest_int
        return suggest(name, low, high, log=self.kind.startswith("log_"))

    def encode(self, value: object) -> object:
        """What Optuna stores for `value`; ValueError when the distribution does not hold it."""
        if self.kind == "choice":
            for option, choice in zip(self.options, self.values, strict=True):
                if choice == value and type(choice) is type(value):
                    return option
        elif _is_number(value, float if "uniform" in self.kind else int) and (
            self.values[0] <= value <= self.values[1]
        ):
            return float(value) if "uniform" in self.kind else value
        raise ValueError(f"{value!r} is outside {self}")


def _is_number(value: object, kind: type) -> bool:
    # YAML gives ints for whole numbers: a float may be written 0, and a bool is never a number.
    allowed = (int, float) if kind is float else (int,)
    return isinstance(value, allowed) and not isinstance(value, bool)


class TuneParams(BaseModel):
    """params.yaml's `tune` section, validated against the params it varies."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    trials: int = Field(ge=1)
    validation_samples: int = Field(ge=1, lt=MNIST_TRAIN_SIZE)
    sampler: Literal["tpe", "random"]
    pruner: Literal["median", "none"]
    space: dict[str, Distribution]

    @field_validator("space", mode="plain")
    @classmethod
    def _space(cls, raw: object, info) -> dict[str, Distribution]:
        """Each param's distribution; ValueError names every bad entry, in one line."""
        if not isinstance(raw, dict) or not raw:
            raise ValueError(
                "tune.space: expected a mapping of params to distributions, e.g. "
                f"train.epochs: {{int: [3, 15]}}, got {raw!r}"
            )
        space, problems = {}, []
        for name, spec in raw.items():
            try:
                space[name] = _distribution(str(name), spec, info.context["params"])
            except ValueError as problem:
                problems.append(f"tune.space.{name}: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return space


def parse_tune(params: Params | dict, source: str = "params.yaml") -> TuneParams:
    """The `tune` section of params (a raw tree is validated first); PipelineError otherwise."""
    if not isinstance(params, Params):
        params = parse_params(params, source)
    if params.tune is None:
        raise PipelineError(
            f"{source}: tune: missing; add a tune section (git show HEAD:params.yaml has one)"
        )
    try:
        return TuneParams.model_validate(params.tune, context={"params": params})
    except ValidationError as error:
        raise PipelineError(f"{source}: " + "; ".join(map(_describe, error.errors()))) from None


def require_training_images(params: Params, tune: TuneParams, source: str = "params.yaml") -> None:
    """Raises PipelineError unless the study's validation split leaves training images."""
    kept = params.prepare.train_samples or MNIST_TRAIN_SIZE
    if tune.validation_samples >= kept:
        raise PipelineError(
            f"{source}: tune.validation_samples: {tune.validation_samples} leaves no training "
            f"images; it must be less than the {kept} kept (prepare.train_samples)"
        )


def _distribution(name: str, spec: object, params: Params) -> Distribution:
    searchable = [key for key in params.flat() if key.split(".")[0] in SEARCHABLE_SECTIONS]
    if name in NOT_SEARCHABLE:
        raise ValueError(f"not searchable: {NOT_SEARCHABLE[name]}")
    if name.split(".")[0] not in SEARCHABLE_SECTIONS:
        raise ValueError("not searchable: the space varies train.* and prepare.* params only")
    settings = [key for key in searchable if key.startswith(f"{name}.")]
    if settings:
        raise ValueError(f"a section, not a param; vary its settings: {', '.join(settings)}")
    if name not in searchable:
        raise ValueError(f"unknown param{_suggestion(name, params, searchable)}")
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
        raise ValueError(
            f"expected one of {{{': ..., '.join(KINDS)}: ...}}, e.g. {{int: [3, 15]}}, got {spec!r}"
        )
    ((kind, values),) = spec.items()
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ValueError(f"choice needs a non-empty list of values, got {values!r}")
        for index, value in enumerate(values):
            if value in values[:index]:
                raise ValueError(f"choice {values!r} has {value!r} twice")
    else:
        number = float if "uniform" in kind else int
        pair = isinstance(values, list) and len(values) == 2
        if not (pair and all(_is_number(end, number) for end in values)):
            what = "numbers" if number is float else "integers"
            raise ValueError(f"{kind} needs [low, high], two {what}, got {values!r}")
        low, high = values = [number(end) for end in values]
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{kind} needs finite ends, got {spec[kind]!r}")
        if low > high:
            raise ValueError(f"low {low!r} > high {high!r}")
        if kind.startswith("log_") and low <= 0:
            raise ValueError(f"{kind} needs low > 0, got {low!r}")
    # Every constraint on a param is an interval, so a range whose ends are valid is valid.
    for value in values:
        try:
            with_values(params, {name: value})
        except PipelineError as error:
            reason = str(error).split(": ", 1)[-1].removeprefix(f"{name}: ")
            reason = reason.removesuffix(f", got {value!r}")
            raise ValueError(
                f"{kind} {spec[kind]!r}: {value!r} is not allowed for {name} ({reason})"
            ) from None
    return Distribution(kind, tuple(values))


def _suggestion(name: str, params: Params, searchable: list[str]) -> str:
    """The param likely meant; for an optimizer setting, the chosen optimizer's settings."""
    optimizer = params.train.optimizer
    if name.startswith("train.optimizer."):
        # Compare the bare settings: the shared prefix makes every setting look close.
        takes = [key for key in type(optimizer).model_fields if key != "name"]
        close = difflib.get_close_matches(name.removeprefix("train.optimizer."), takes, n=1)
        hint = f" (did you mean 'train.optimizer.{close[0]}'?)" if close else ""
        return f"{hint}; optimizer '{optimizer.name}' takes: {', '.join(takes)}"
    candidates = [key for key in searchable if key not in NOT_SEARCHABLE]
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(issue: dict) -> str:
    key = ".".join(["tune", *(str(part) for part in issue["loc"])])
    if issue["type"] == "value_error":  # parse_space's messages name their keys.
        return issue["msg"].removeprefix("Value error, ")
    if issue["type"] == "extra_forbidden":
        allowed = list(TuneParams.model_fields)
        close = difflib.get_close_matches(str(issue["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{key}: unknown key{hint}; allowed: {', '.join(allowed)}"
    if issue["type"] == "missing":
        return f"{key}: missing; add it (git show HEAD:params.yaml has every key)"
    if issue["type"] == "dict_type" and not issue["loc"]:
        return f"tune: expected a mapping of settings, got {issue['input']!r}"
    return f"{key}: {issue['msg'][:1].lower()}{issue['msg'][1:]}, got {issue['input']!r}"


def with_values(params: Params, values: dict[str, object]) -> Params:
    """`params` with each dotted param set to its value, validated."""
    tree = params.model_dump()
    for name, value in values.items():
        *sections, key = name.split(".")
        functools.reduce(dict.__getitem__, sections, tree)[key] = copy.deepcopy(value)
    return parse_params(tree, "trial params")


def suggest(trial, space: dict[str, Distribution]) -> dict[str, object]:
    """Each param's value as Optuna's sampler suggests it (Optuna params are named as ours)."""
    return {name: distribution.suggest(trial, name) for name, distribution in space.items()}


def encoded_defaults(params: Params, space: dict[str, Distribution]) -> dict[str, object]:
    """params.yaml's values of the space's params as Optuna stores them (ValueError if outside)."""
    flat, encoded = params.flat(), {}
    for name, distribution in space.items():
        try:
            encoded[name] = distribution.encode(flat[name])
        except ValueError as error:
            raise ValueError(f"{name}: params.yaml's {error}") from None
    return encoded


def trial_params(params: Params, tune: TuneParams, values: dict[str, object]) -> Params:
    """The params a trial trains with: its values and the study's validation split."""
    return with_values(params, {**values, VALIDATION_PARAM: tune.validation_samples})


def final_overrides(values: dict[str, object]) -> list[str]:
    """`dvc exp run -S` overrides that retrain the values on every training image."""
    values = {**values, VALIDATION_PARAM: 0}
    return [f"{name}={hydra_value(value)}" for name, value in values.items()]


def hydra_value(value: object) -> str:
    """`value` in Hydra's override grammar (`dvc exp run -S`), read back as the same value and
    type: repr for floats (exact), JSON-like lists and dicts, quoted strings."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be a param")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(hydra_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {hydra_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} is not a params value")
