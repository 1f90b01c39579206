"""The `tune` section of params.yaml: the study's budget, validation split, sampler, pruner and
search space, validated against the params it varies; and what a trial's values become: Optuna
suggestions, the params the trial trains with, and `dvc exp run -S` overrides.

A space maps a param's dotted name to one distribution:
`{uniform: [low, high]}`, `{log_uniform: [low, high]}`, `{int: [low, high]}`,
`{log_int: [low, high]}` or `{choice: [value, ...]}`. Each end of a range and each choice must
itself be a valid value of its param, so a study never starts a trial that cannot train.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mnist_pipeline.data.mnist import MNIST_TRAIN_SIZE
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params, parse_params

if TYPE_CHECKING:
    import optuna

VALIDATION_PARAM = "prepare.validation_samples"
SEARCHABLE_SECTIONS = ("train", "prepare")
# Params a space may not vary, and why (each is one line of the error).
NOT_SEARCHABLE = {
    "train.optimizer.name": (
        "the optimizers take different settings; tune one optimizer per study, set in "
        "params.yaml's train.optimizer"
    ),
    VALIDATION_PARAM: "tune.validation_samples sets it for every trial",
    "prepare.train_samples": (
        "it changes which images train and validate (the last ones kept), so trials would "
        "not compare"
    ),
    "prepare.test_samples": "it changes only the test set, which never chooses",
}
# Why not base.seed: choosing the luckiest seed on the validation split tunes on noise, and the
# winner's retrain would not carry its luck over.
UNSEARCHABLE_SECTIONS = "the space varies train.* and prepare.* params only"
# The values Optuna stores as a categorical choice.
OPTUNA_CHOICE_TYPES = (type(None), bool, int, float, str)


def _is_number(value: object, kind) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


@dataclass(frozen=True)
class FloatRange:
    """`uniform` or `log_uniform`: a float from low to high."""

    low: float
    high: float
    log: bool

    def __str__(self) -> str:
        return f"{{{'log_uniform' if self.log else 'uniform'}: [{self.low!r}, {self.high!r}]}}"

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def decode(self, stored: object) -> object:
        return stored

    def encode(self, value: object) -> object:
        """What Optuna stores for `value`; ValueError when the range does not hold it."""
        if _is_number(value, int | float) and self.low <= value <= self.high:
            return float(value)
        raise ValueError(f"{value!r} is outside {self}")


@dataclass(frozen=True)
class IntRange:
    """`int` or `log_int`: an integer from low to high, both included."""

    low: int
    high: int
    log: bool

    def __str__(self) -> str:
        return f"{{{'log_int' if self.log else 'int'}: [{self.low!r}, {self.high!r}]}}"

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def decode(self, stored: object) -> object:
        return stored

    def encode(self, value: object) -> object:
        """What Optuna stores for `value`; ValueError when the range does not hold it."""
        if _is_number(value, int) and self.low <= value <= self.high:
            return value
        raise ValueError(f"{value!r} is outside {self}")


@dataclass(frozen=True)
class Choice:
    """`choice`: one of the values. Optuna stores only None, bool, int, float and str, so when
    any value is something else (a list of widths) every value is offered to Optuna as its JSON
    text ("[512, 256]", "1024"), which its UI and plots show as written."""

    values: tuple

    def __str__(self) -> str:
        return f"{{choice: [{', '.join(json.dumps(value) for value in self.values)}]}}"

    @property
    def options(self) -> tuple:
        """What Optuna chooses among: the values themselves, or their JSON texts."""
        if all(isinstance(value, OPTUNA_CHOICE_TYPES) for value in self.values):
            return self.values
        return tuple(json.dumps(value) for value in self.values)

    def suggest(self, trial: optuna.Trial, name: str) -> object:
        return self.decode(trial.suggest_categorical(name, self.options))

    def decode(self, stored: object) -> object:
        """The value an Optuna param stands for (a copy, so a trial cannot change the space)."""
        for option, value in zip(self.options, self.values, strict=True):
            if option == stored and type(option) is type(stored):
                return copy.deepcopy(value)
        raise ValueError(f"{stored!r} is none of the choices {list(self.options)}")

    def encode(self, value: object) -> object:
        """What Optuna stores for `value` (decode's inverse); ValueError when it is none of
        the choices."""
        for option, choice in zip(self.options, self.values, strict=True):
            if choice == value and type(choice) is type(value):
                return option
        raise ValueError(f"{value!r} is none of {self}")


Distribution = FloatRange | IntRange | Choice
RANGES = {
    "uniform": (float, False),
    "log_uniform": (float, True),
    "int": (int, False),
    "log_int": (int, True),
}
KINDS = (*RANGES, "choice")


class TuneParams(BaseModel):
    """params.yaml's `tune` section, validated against the params it varies."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    trials: int = Field(ge=1)
    # At least one image to choose on, and (checked against prepare.train_samples in
    # parse_tune) fewer than the training images kept.
    validation_samples: int = Field(ge=1, lt=MNIST_TRAIN_SIZE)
    sampler: Literal["tpe", "random"]
    pruner: Literal["median", "none"]
    space: dict[str, FloatRange | IntRange | Choice]

    @field_validator("space", mode="plain")
    @classmethod
    def _space(cls, value: object, info) -> dict[str, Distribution]:
        params = (info.context or {}).get("params")
        if params is None:
            raise ValueError("tune.space: parse the tune section with parse_tune")
        return parse_space(value, params)


def parse_tune(params: Params | dict, source: str = "params.yaml") -> TuneParams:
    """The `tune` section of validated params, or of a raw params tree (validated first);
    raises PipelineError naming the first bad key, in one line."""
    if not isinstance(params, Params):
        params = parse_params(params, source)
    raw = params.tune
    if raw is None:
        raise PipelineError(
            f"{source}: tune: missing; add a tune section (git show HEAD:params.yaml has one)"
        )
    try:
        tune = TuneParams.model_validate(raw, context={"params": params})
    except ValidationError as error:
        raise PipelineError(
            f"{source}: " + "; ".join(_describe(issue) for issue in error.errors())
        ) from None
    return tune


def require_training_images(params: Params, tune: TuneParams, source: str = "params.yaml") -> None:
    """Raises PipelineError unless the study's validation split leaves training images: a
    check of the params a study would run with, made by `mnist-pipeline tune` before anything
    starts (a quick pipeline run's small prepare.train_samples is no error in itself)."""
    kept = params.prepare.train_samples or MNIST_TRAIN_SIZE
    if tune.validation_samples >= kept:
        raise PipelineError(
            f"{source}: tune.validation_samples: {tune.validation_samples} leaves no training "
            f"images; it must be less than the {kept} kept (prepare.train_samples)"
        )


def parse_space(raw: object, params: Params) -> dict[str, Distribution]:
    """Each param's distribution; raises ValueError naming every bad entry, in one line."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            "tune.space: expected a mapping of params to distributions, e.g. "
            f"train.epochs: {{int: [3, 15]}}, got {raw!r}"
        )
    searchable = [key for key in params.flat() if key.split(".")[0] in SEARCHABLE_SECTIONS]
    space, problems = {}, []
    for name, spec in raw.items():
        try:
            space[name] = _distribution(str(name), spec, params, searchable)
        except ValueError as problem:
            problems.append(f"tune.space.{name}: {problem}")
    if problems:
        raise ValueError("; ".join(problems))
    return space


def _distribution(name: str, spec: object, params: Params, searchable: list[str]):
    if name in NOT_SEARCHABLE:
        raise ValueError(f"not searchable: {NOT_SEARCHABLE[name]}")
    if name.split(".")[0] not in SEARCHABLE_SECTIONS:
        raise ValueError(f"not searchable: {UNSEARCHABLE_SECTIONS}")
    settings = [key for key in searchable if key.startswith(f"{name}.")]
    if settings:
        raise ValueError(f"a section, not a param; vary its settings: {', '.join(settings)}")
    if name not in searchable:
        raise ValueError(f"unknown param{_suggestion(name, params, searchable)}")
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
        raise ValueError(
            f"expected one of {{{': ..., '.join(KINDS)}: ...}}, e.g. {{int: [3, 15]}}, got {spec!r}"
        )
    ((kind, arguments),) = spec.items()
    if kind == "choice":
        return _choice(name, arguments, params)
    return _range(name, kind, arguments, params)


def _suggestion(name: str, params: Params, searchable: list[str]) -> str:
    """The param likely meant; for an optimizer setting, the chosen optimizer's settings."""
    optimizer = params.train.optimizer
    if name.startswith("train.optimizer."):
        # Another optimizer's setting, or a typo of this one's: compare the bare settings, as
        # the shared prefix makes every setting look close.
        takes = [key for key in type(optimizer).model_fields if key != "name"]
        close = difflib.get_close_matches(name.removeprefix("train.optimizer."), takes, n=1)
        hint = f" (did you mean 'train.optimizer.{close[0]}'?)" if close else ""
        return f"{hint}; optimizer '{optimizer.name}' takes: {', '.join(takes)}"
    candidates = [key for key in searchable if key not in NOT_SEARCHABLE]
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _range(name: str, kind: str, arguments: object, params: Params) -> FloatRange | IntRange:
    number, log = RANGES[kind]
    # YAML gives ints for whole numbers: a float range may be written [0, 1], an int one not
    # [1.0, 2] (and a bool is never a number here).
    allowed = (int, float) if number is float else (int,)
    if not (
        isinstance(arguments, list)
        and len(arguments) == 2
        and all(isinstance(end, allowed) and not isinstance(end, bool) for end in arguments)
    ):
        what = "integers" if number is int else "numbers"
        raise ValueError(f"{kind} needs [low, high], two {what}, got {arguments!r}")
    low, high = (number(end) for end in arguments)
    if not all(math.isfinite(end) for end in (low, high)):
        raise ValueError(f"{kind} needs finite ends, got {arguments!r}")
    if low > high:
        raise ValueError(f"low {low!r} > high {high!r}")
    if log and low <= 0:
        raise ValueError(f"{kind} needs low > 0, got {low!r}")
    # Every constraint on a param is an interval, so ends that are allowed mean all between
    # them are.
    for end in (low, high):
        _check_value(name, end, params, f"{kind} {arguments!r}")
    return FloatRange(low, high, log) if number is float else IntRange(low, high, log)


def _choice(name: str, values: object, params: Params) -> Choice:
    if not isinstance(values, list):
        raise ValueError(f"choice needs a list of values, got {values!r}")
    if not values:
        raise ValueError("choice is empty")
    for index, value in enumerate(values):
        if any(earlier == value for earlier in values[:index]):
            raise ValueError(f"choice {values!r} has {value!r} twice")
        _check_value(name, value, params, f"choice {values!r}")
    return Choice(tuple(values))


def _check_value(name: str, value: object, params: Params, where: str) -> None:
    """Raises ValueError unless `value` is a valid value of param `name`, with parse_params'
    own reason."""
    try:
        with_values(params, {name: value})
    except PipelineError as error:
        reason = _reason(str(error), name, value)
        raise ValueError(f"{where}: {value!r} is not allowed for {name} ({reason})") from None


def _reason(message: str, name: str, value: object) -> str:
    """parse_params' message for one param, without the file, the key and the value it names."""
    reason = message.split(": ", 1)[-1]
    reason = reason.removeprefix(f"{name}: ").removesuffix(f", got {value!r}")
    return reason


def with_values(params: Params, values: dict[str, object]) -> Params:
    """`params` with each dotted param set to its value, validated by parse_params."""
    tree = params.model_dump()
    for name, value in values.items():
        *sections, key = name.split(".")
        node = tree
        for section in sections:
            node = node[section]
        node[key] = copy.deepcopy(value)
    return parse_params(tree, "trial params")


def _describe(issue: dict) -> str:
    key = ".".join(["tune", *(str(part) for part in issue["loc"])])
    if issue["type"] == "value_error":
        # parse_space's messages already name their keys.
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
    message = issue["msg"][:1].lower() + issue["msg"][1:]
    return f"{key}: {message}, got {issue['input']!r}"


# --- A trial's values ----------------------------------------------------------------------


def suggest(trial: optuna.Trial, space: dict[str, Distribution]) -> dict[str, object]:
    """Each param's value, as Optuna's sampler suggests it for this trial (Optuna params are
    named as the params are)."""
    return {name: distribution.suggest(trial, name) for name, distribution in space.items()}


def decode(space: dict[str, Distribution], stored: dict[str, object]) -> dict[str, object]:
    """The values a finished trial's Optuna params (`trial.params`) stand for."""
    return {name: space[name].decode(stored[name]) for name in space}


def encoded_defaults(params: Params, space: dict[str, Distribution]) -> dict[str, object]:
    """params.yaml's own values of the space's params, as Optuna stores them: what enqueuing
    the defaults as a trial takes. Raises ValueError naming the first value the space does not
    hold (Optuna would refuse a choice outside it, and a range's would be a trial outside the
    space)."""
    tree, encoded = params.model_dump(), {}
    for name, distribution in space.items():
        value = tree
        for key in name.split("."):
            value = value[key]
        try:
            encoded[name] = distribution.encode(value)
        except ValueError as error:
            raise ValueError(f"{name}: params.yaml's {error}") from None
    return encoded


def trial_params(params: Params, tune: TuneParams, values: dict[str, object]) -> Params:
    """The params a trial trains with: `params` with the trial's values and the study's
    validation split, exactly as params.yaml would hold them after `dvc_set_arguments`."""
    return with_values(params, {**values, VALIDATION_PARAM: tune.validation_samples})


def dvc_set_arguments(values: dict[str, object], tune: TuneParams) -> list[str]:
    """`dvc exp run -S` overrides (pass each after a `-S`) that make params.yaml hold a
    trial's params, validation split included."""
    return _overrides({**values, VALIDATION_PARAM: tune.validation_samples})


def final_overrides(values: dict[str, object]) -> list[str]:
    """`dvc exp run -S` overrides for retraining the chosen values on every training image,
    with no validation split: the experiment whose test accuracy the study reports."""
    return _overrides({**values, VALIDATION_PARAM: 0})


def _overrides(values: dict[str, object]) -> list[str]:
    return [f"{name}={hydra_value(value)}" for name, value in values.items()]


def hydra_value(value: object) -> str:
    """`value` in Hydra's override grammar (which `dvc exp run -S` parses), read back as the same
    value and type: repr for floats (exact), JSON-like lists and dicts, quoted strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be a param")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{key}: {hydra_value(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"{type(value).__name__} is not a params value")
