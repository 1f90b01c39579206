"""The typed form of `params.yaml`, validated once at the start of every stage.

Unknown keys, wrong types and out-of-range values are errors that name the key and what
is allowed, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mnist_pipeline.data.mnist import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE
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
    # The last N of the training images kept become the validation split; 0 (the chapter's
    # setup) keeps them all for training. A default, so the params files of older runs parse.
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
    """keras.optimizers.RMSprop; params.yaml's default, the chapter's optimizer."""

    name: Literal["rmsprop"]
    learning_rate: float = Field(gt=0)
    rho: float = Field(ge=0, lt=1)
    momentum: float = Field(ge=0)
    epsilon: float = Field(gt=0)
    centered: bool


class SGDParams(_Section):
    """keras.optimizers.SGD: the chapter's update, with momentum (and Nesterov's) optional."""

    name: Literal["sgd"]
    learning_rate: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    nesterov: bool


class AdamParams(_Section):
    """keras.optimizers.Adam."""

    name: Literal["adam"]
    learning_rate: float = Field(gt=0)
    beta_1: float = Field(ge=0, lt=1)
    beta_2: float = Field(ge=0, lt=1)
    epsilon: float = Field(gt=0)
    amsgrad: bool


# One class per optimizer, picked by `name`; each takes exactly its own settings.
OptimizerParams = Annotated[RMSpropParams | SGDParams | AdamParams, Field(discriminator="name")]
OPTIMIZER_PARAMS: dict[str, type[_Section]] = {
    "rmsprop": RMSpropParams,
    "sgd": SGDParams,
    "adam": AdamParams,
}
MAX_WIDTH = 65536
# More OpenBLAS threads than this only wait on each other for these matrix sizes.
MAX_THREADS = 64


class TrainParams(_Section):
    framework: Literal["keras", "numpy"]
    # One width (the chapter's one hidden layer) or a list, one hidden layer per width. Kept
    # as written, so a run of the chapter's network logs `512` as it always has.
    hidden_units: int | list[int]
    activation: Literal["relu", "tanh", "sigmoid"]
    # The rate of the Dropout after each hidden layer; 0 adds no Dropout layer at all.
    dropout: float = Field(default=0.0, ge=0, lt=1)
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1)
    optimizer: OptimizerParams
    # The portable mode's (framework: numpy) OpenBLAS threads: part of what decides its weights,
    # so a param, not the machine's core count. Keras ignores it. A default, so the params
    # files of older runs parse.
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
        """The hidden layers' widths, first to last."""
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
    # `mnist-pipeline tune`'s study and search space: read by no stage (no stage lists it in
    # dvc.yaml, so editing it re-runs nothing) and so kept opaque here, where every stage
    # imports it; mnist_pipeline.tuning.space validates it when tuning or checking params.
    # Optional, so the params files of older runs parse.
    tune: dict | None = None

    def flat(self) -> dict[str, object]:
        """The stages' params as `section.key` (nested: `train.optimizer.rho`) for MLflow;
        without `tune`, which configures a search rather than a run."""
        return _flatten(self.model_dump(exclude={"tune"}))


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
        issues = error.errors()
        problems = [_optimizer_mismatch(issues)] if _optimizer_mismatch(issues) else []
        problems += [_describe(issue) for issue in issues if not _is_mismatch(issue)]
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
    location = _without_union_tags([str(part) for part in issue["loc"]])
    key = ".".join(location) or "(top level)"
    if issue["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # The optimizer's `name` picks its class; name the key and the choices.
        *others, last = [repr(name) for name in OPTIMIZER_PARAMS]
        names = f"{', '.join(others)} or {last}"
        found = issue["input"].get("name") if isinstance(issue["input"], dict) else None
        got = "missing" if found is None else f"got {found!r}"
        return f"{key}.name: input should be {names}, {got}"
    if issue["type"] == "extra_forbidden":
        return f"{key}: unknown key{_suggestion(issue['loc'])}"
    if issue["type"] == "missing":
        return f"{key}: missing; add it (git show HEAD:params.yaml lists every key)"
    if issue["type"] == "value_error":
        # Our own cross-field checks already name their keys.
        return issue["msg"].removeprefix("Value error, ")
    return f"{key}: {_lower_first(issue['msg'])}, got {issue['input']!r}"


def _is_mismatch(issue: dict) -> bool:
    """A setting missing from, or foreign to, the optimizer `name` chose."""
    location = issue["loc"]
    return (
        location[:2] == ("train", "optimizer")
        and len(location) == 4
        and issue["type"] in ("missing", "extra_forbidden")
    )


def _optimizer_mismatch(issues: list[dict]) -> str | None:
    """One message for an optimizer's missing and foreign settings (as after changing `name`
    alone), ending with the settings that optimizer takes."""
    mismatched = [issue for issue in issues if _is_mismatch(issue)]
    if not mismatched:
        return None
    name = str(mismatched[0]["loc"][2])
    takes = [key for key in OPTIMIZER_PARAMS[name].model_fields if key != "name"]
    parts = []
    for issue in sorted(mismatched, key=lambda issue: issue["type"] != "missing"):
        setting = str(issue["loc"][3])
        if issue["type"] == "missing":
            parts.append(f"train.optimizer.{setting}: missing")
        else:
            close = difflib.get_close_matches(setting, takes, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            parts.append(f"train.optimizer.{setting}: unknown key{hint}")
    return f"{'; '.join(parts)}; optimizer '{name}' takes exactly: {', '.join(takes)}"


def _without_union_tags(location: list[str]) -> list[str]:
    """Pydantic puts the chosen optimizer's tag in the location (train.optimizer.adam.rho);
    params.yaml has no such level."""
    return [
        part
        for index, part in enumerate(location)
        if not (index > 0 and location[index - 1] == "optimizer" and part in OPTIMIZER_PARAMS)
    ]


def _suggestion(location: tuple) -> str:
    """Names the allowed keys of the enclosing section, and the likely intended one."""
    model: type[BaseModel] = Params
    parts = [str(part) for part in location]
    what = ""
    for index, part in enumerate(parts[:-1]):
        if model is TrainParams and part == "optimizer":
            # The next part is the tag pydantic chose: that optimizer's own settings.
            name = parts[index + 1]
            model, what = OPTIMIZER_PARAMS[name], f" of optimizer '{name}'"
            break
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(parts[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{what}{hint}; allowed: {', '.join(allowed)}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
