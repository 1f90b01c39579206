"""The typed form of `params.yaml`, validated once at the start of every stage.

Unknown keys, wrong types and out-of-range values are errors that name the key and what
is allowed, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mnist_pipeline.dataset import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE
from mnist_pipeline.errors import PipelineError


class _Section(BaseModel):
    # Strict: YAML already gives real ints, floats and booleans, so "5" or 1 for true is a
    # mistake worth reporting rather than coercing.
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


class OptimizerParams(_Section):
    name: Literal["rmsprop"]
    learning_rate: float = Field(gt=0)
    rho: float = Field(ge=0, lt=1)
    momentum: float = Field(ge=0)
    epsilon: float = Field(gt=0)
    centered: bool


class TrainParams(_Section):
    framework: Literal["keras", "numpy"]
    hidden_units: int = Field(ge=1, le=65536)
    activation: Literal["relu", "tanh", "sigmoid"]
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1)
    optimizer: OptimizerParams


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

    def flat(self) -> dict[str, object]:
        """All params as `section.key` (nested: `train.optimizer.rho`) for MLflow."""
        return _flatten(self.model_dump())


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validates an already-loaded params tree; raises PipelineError naming the first bad key."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = [_describe(issue) for issue in error.errors()]
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


def _describe(issue: dict) -> str:
    location = [str(part) for part in issue["loc"]]
    key = ".".join(location) or "(top level)"
    if issue["type"] == "extra_forbidden":
        return f"{key}: unknown key{_suggestion(location)}"
    if issue["type"] == "missing":
        return f"{key}: missing; add it (git show HEAD:params.yaml lists every key)"
    if issue["type"] == "value_error":
        # Our own cross-field checks already name their keys.
        return issue["msg"].removeprefix("Value error, ")
    return f"{key}: {_lower_first(issue['msg'])}, got {issue['input']!r}"


def _suggestion(location: list[str]) -> str:
    """Names the allowed keys of the enclosing section, and the likely intended one."""
    model: type[BaseModel] = Params
    for part in location[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(location[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; allowed: {', '.join(allowed)}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
