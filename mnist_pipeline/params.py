"""The typed form of `params.yaml`, validated once at the start of every stage: unknown keys,
wrong types and out-of-range values are errors that name the key and what is allowed."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mnist_pipeline.errors import PipelineError

# MNIST's sizes, which bound prepare's counts; data/mnist.py checks the data against them.
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000


class _Section(BaseModel):
    # Strict: YAML gives real ints, floats and booleans, so "5" or 1 for true is a mistake.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BaseParams(_Section):
    seed: int = Field(ge=0, lt=2**32)


class FetchParams(_Section):
    source: Literal["auto", "keras", "mirror", "file"]
    path: str | None

    @model_validator(mode="after")
    def _path_matches_source(self) -> FetchParams:
        if self.source == "file" and not self.path:
            raise ValueError("fetch.path is required when fetch.source is 'file'")
        return self


class PrepareParams(_Section):
    train_samples: int | None = Field(ge=1, le=MNIST_TRAIN_SIZE)
    test_samples: int | None = Field(ge=1, le=MNIST_TEST_SIZE)
    # A default, so the params files of older runs parse.
    validation_samples: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _training_images_left(self) -> PrepareParams:
        kept = self.train_samples if self.train_samples is not None else MNIST_TRAIN_SIZE
        if self.validation_samples >= kept:
            raise ValueError(
                f"prepare.validation_samples: {self.validation_samples} leaves no training "
                f"images; it must be less than prepare.train_samples ({kept} kept"
                f"{', all of MNIST' if self.train_samples is None else ''})"
            )
        return self


class RMSpropParams(_Section):
    name: Literal["rmsprop"]
    learning_rate: float = Field(gt=0)
    rho: float = Field(ge=0, lt=1)
    momentum: float = Field(ge=0)
    epsilon: float = Field(gt=0)
    centered: bool


class SGDParams(_Section):
    name: Literal["sgd"]
    learning_rate: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    nesterov: bool


class AdamParams(_Section):
    name: Literal["adam"]
    learning_rate: float = Field(gt=0)
    beta_1: float = Field(ge=0, lt=1)
    beta_2: float = Field(ge=0, lt=1)
    epsilon: float = Field(gt=0)
    amsgrad: bool


# One class per optimizer, picked by `name`; each takes exactly its own settings.
OptimizerParams = Annotated[RMSpropParams | SGDParams | AdamParams, Field(discriminator="name")]
OPTIMIZER_PARAMS = {"rmsprop": RMSpropParams, "sgd": SGDParams, "adam": AdamParams}
MAX_WIDTH = 65536
# More OpenBLAS threads than this only wait on each other for these matrix sizes.
MAX_THREADS = 64


class TrainParams(_Section):
    framework: Literal["keras", "numpy"]
    # One width or a list, kept as written, so the chapter's network logs `512` as it always has.
    hidden_units: int | list[int]
    activation: Literal["relu", "tanh", "sigmoid"]
    # The rate of the Dropout after each hidden layer; 0 adds no Dropout layer at all.
    dropout: float = Field(default=0.0, ge=0, lt=1)
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1)
    optimizer: OptimizerParams
    # The portable mode's OpenBLAS threads: they decide its weights, so a param, not the core
    # count. Keras ignores it. A default, so the params files of older runs parse.
    threads: int = Field(default=1, ge=1, le=MAX_THREADS)

    @field_validator("hidden_units", mode="plain")
    @classmethod
    def _widths(cls, value: object) -> int | list[int]:
        widths = value if isinstance(value, list) else [value]
        valid = bool(widths) and all(
            isinstance(width, int) and not isinstance(width, bool) and 1 <= width <= MAX_WIDTH
            for width in widths
        )
        if not valid:
            raise ValueError(
                "train.hidden_units: input should be a valid integer from 1 to "
                f"{MAX_WIDTH} (one hidden layer) or a non-empty list of them (one hidden "
                f"layer each, e.g. [512, 256]), got {value!r}"
            )
        return value

    @property
    def widths(self) -> tuple[int, ...]:
        units = self.hidden_units
        return tuple(units) if isinstance(units, list) else (units,)


class EvaluateParams(_Section):
    batch_size: int = Field(ge=1)


class MlflowParams(_Section):
    experiment_name: str = Field(min_length=1)
    registered_model_name: str = Field(min_length=1)


class Params(_Section):
    base: BaseParams
    fetch: FetchParams
    prepare: PrepareParams
    train: TrainParams
    evaluate: EvaluateParams
    mlflow: MlflowParams
    # `mnist-pipeline tune`'s settings, validated by tuning.space; optional for older runs.
    tune: dict | None = None

    def flat(self) -> dict[str, object]:
        """The stages' params (not `tune`) as `section.key` (`train.optimizer.rho`) for MLflow."""
        return _flatten(self.model_dump(exclude={"tune"}))


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        is_section = isinstance(value, dict)
        flat.update(_flatten(value, f"{prefix}{key}.") if is_section else {f"{prefix}{key}": value})
    return flat


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validates an already-loaded params tree; raises PipelineError naming every bad key."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = [_describe(issue) for issue in error.errors()]
        # A setting missing from, or foreign to, the optimizer `name` picks (as after changing
        # `name` alone): say once which settings that optimizer takes.
        names = {_optimizer_of(issue) for issue in error.errors()} - {None}
        problems += [f"optimizer '{name}' takes exactly: {_settings(name)}" for name in names]
        raise PipelineError(f"{source}: " + "; ".join(problems)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates a params file; every failure is one PipelineError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(
            f"{path}: not found; run from the repository root, where params.yaml lives"
        ) from None
    try:
        # YAML 1.2 (as DVC reads it), so `1e-3` is a float, not a string.
        raw = YAML(typ="safe", pure=True).load(text)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid syntax"
        raise PipelineError(f"{path}: YAML syntax error{where}: {problem}") from None
    return parse_params(raw, str(path))


def _optimizer_of(issue: dict) -> str | None:
    location, kind = issue["loc"], issue["type"]
    settings_issue = location[:2] == ("train", "optimizer") and len(location) == 4
    return str(location[2]) if settings_issue and kind in ("missing", "extra_forbidden") else None


def _settings(optimizer: str) -> str:
    return ", ".join(key for key in OPTIMIZER_PARAMS[optimizer].model_fields if key != "name")


def _describe(issue: dict) -> str:
    location = [str(part) for part in issue["loc"]]
    # Pydantic puts the chosen optimizer's tag in the location (train.optimizer.adam.rho).
    optimizer = (
        location[2] if location[:2] == ["train", "optimizer"] and len(location) > 3 else None
    )
    key = ".".join(part for part in location if part != optimizer) or "(top level)"
    if issue["type"] in ("union_tag_invalid", "union_tag_not_found"):
        *others, last = [repr(name) for name in OPTIMIZER_PARAMS]
        found = issue["input"].get("name") if isinstance(issue["input"], dict) else None
        got = "missing" if found is None else f"got {found!r}"
        return f"{key}.name: input should be {', '.join(others)} or {last}, {got}"
    if issue["type"] == "missing":
        fix = "" if optimizer else "; add it (git show HEAD:params.yaml lists every key)"
        return f"{key}: missing{fix}"
    if issue["type"] == "extra_forbidden":
        model = OPTIMIZER_PARAMS[optimizer] if optimizer else _section(location[:-1])
        allowed = list(model.model_fields) if model else []
        close = difflib.get_close_matches(location[-1], allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        listed = "" if optimizer or not allowed else f"; allowed: {', '.join(allowed)}"
        return f"{key}: unknown key{hint}{listed}"
    if issue["type"] == "value_error":
        return issue["msg"].removeprefix("Value error, ")  # Our own checks name their keys.
    message = issue["msg"]
    return f"{key}: {message[:1].lower()}{message[1:]}, got {issue['input']!r}"


def _section(location: list[str]) -> type[BaseModel] | None:
    """The params class of the section at `location` (Params at the top), if it is one."""
    model: type[BaseModel] = Params
    for part in location:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
