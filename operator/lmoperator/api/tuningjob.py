"""LMTuningJob: hyperparameter search whose trials are LMTrainingJobs sharing a worker budget.

A parameter names the field it sets in `spec.trialTemplate` by its dotted path
(`training.learningRate`). The paths a parameter may set are derived from the
LMTrainingJob model itself (`TUNABLE_FIELDS`), and CEL rules generated from that list
make the API server reject a typo at `kubectl apply`, naming the path, with the same
words as `elasticlm validate`.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from lmoperator.api.base import ApiModel, CelRule, nested, unique_by
from lmoperator.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    MAX_RESOURCE_NAME_LENGTH,
    Condition,
    ObjectMeta,
    resource_name_rules,
)
from lmoperator.api.trainingjob import LMTrainingJobSpec

MAX_TRIALS = 200

# --------------------------------------------------------------------------------------
# Which fields of an LMTrainingJob spec a parameter may set

# Only what shapes the model and its optimisation: the tuner owns replicas and the
# elastic range, and storage, workers and run policy are the same for every trial.
# training.steps is the trial's length, a budget rather than a hyperparameter.
TUNABLE_ROOTS = ("model.", "training.", "data.tokenizer.")
UNTUNABLE = frozenset(
    {"training.steps", "model.hf.path", "model.hf.claimName", "data.tokenizer.path"}
)


@dataclass(frozen=True)
class TunableField:
    """A scalar field of an LMTrainingJob spec that a parameter may set."""

    path: str  # dotted camelCase below spec, e.g. training.learningRate
    type: Literal["integer", "number", "boolean", "enum"]
    enum: tuple[str, ...] = ()
    minimum: float | None = None  # the field's own bounds (ge/gt, le/lt), if any
    maximum: float | None = None

    def describe(self) -> str:
        return {
            "integer": "an integer",
            "number": "a number",
            "boolean": "true or false",
            "enum": "one of " + ", ".join(self.enum),
        }[self.type]


def _scalar(annotation: Any) -> tuple[str, tuple[str, ...]] | type[BaseModel] | None:
    """The tunable kind of a field's annotation, a nested model, or None."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return annotation
        if issubclass(annotation, enum.Enum):
            return "enum", tuple(str(m.value) for m in annotation)
        if issubclass(annotation, bool):
            return "boolean", ()
        if issubclass(annotation, int):
            return "integer", ()
        if issubclass(annotation, float):
            return "number", ()
    return None


def _bounds(metadata: typing.Iterable[Any]) -> tuple[float | None, float | None]:
    """A field's own lower and upper bound from its constraints (ge/gt, le/lt)."""
    low = high = None
    for item in metadata:
        for attr in ("ge", "gt"):
            if isinstance(getattr(item, attr, None), int | float):
                low = float(getattr(item, attr))
        for attr in ("le", "lt"):
            if isinstance(getattr(item, attr, None), int | float):
                high = float(getattr(item, attr))
    return low, high


def _tunable_fields(model: type[BaseModel], prefix: str = "") -> list[TunableField]:
    found: list[TunableField] = []
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        kind = _scalar(field.annotation)
        if isinstance(kind, type):
            found.extend(_tunable_fields(kind, path + "."))
        elif kind is not None and path.startswith(TUNABLE_ROOTS) and path not in UNTUNABLE:
            type_, values = kind
            low, high = _bounds(field.metadata)
            found.append(TunableField(path, type_, values, low, high))  # type: ignore[arg-type]
    return found


TUNABLE_FIELDS: dict[str, TunableField] = {f.path: f for f in _tunable_fields(LMTrainingJobSpec)}


def _cel_list(paths: typing.Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(p) for p in paths) + "]"


def _paths_of(*types_: str) -> list[str]:
    return [p for p, f in TUNABLE_FIELDS.items() if f.type in types_]


_ALL = _cel_list(TUNABLE_FIELDS)
_INTEGERS = _cel_list(_paths_of("integer"))
_NUMBERS = _cel_list(_paths_of("integer", "number"))
_BOOLEANS = _cel_list(_paths_of("boolean"))
_ENUMS = (
    "{"
    + ", ".join(
        f"{json.dumps(p)}: {_cel_list(f.enum)}" for p, f in TUNABLE_FIELDS.items() if f.enum
    )
    + "}"
)
_DESCRIPTIONS = (
    "{"
    + ", ".join(f"{json.dumps(p)}: {json.dumps(f.describe())}" for p, f in TUNABLE_FIELDS.items())
    + "}"
)
INTEGER_TEXT = r"^-?[0-9]+$"
NUMBER_TEXT = r"^-?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$"


def value_fits(field: TunableField, text: str) -> bool:
    """Whether a Categorical value (text) is valid for the field it sets."""
    if field.type == "integer":
        # fullmatch: unlike RE2's, Python's `$` also matches before a trailing newline.
        return re.fullmatch(INTEGER_TEXT[1:-1], text) is not None
    if field.type == "number":
        return re.fullmatch(NUMBER_TEXT[1:-1], text) is not None
    if field.type == "boolean":
        return text in ("true", "false")
    return text in field.enum


def parse_value(field: TunableField, text: str) -> Any:
    """A Categorical value as the JSON value of its field (after `value_fits`)."""
    if field.type == "integer":
        return int(text)
    if field.type == "number":
        return float(text)
    if field.type == "boolean":
        return text == "true"
    return text


# --------------------------------------------------------------------------------------
# Parameters


class ParameterType(enum.StrEnum):
    FLOAT = "Float"
    INT = "Int"
    CATEGORICAL = "Categorical"


PARAMETER_NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_]*$"
_BOUND = 1e15  # whole numbers up to here are exact in a double, and int() cannot overflow

_NOT_TUNABLE = (
    "is not a tunable field of an LMTrainingJob spec: parameters set number, integer, "
    "boolean and enum fields under model, training and data.tokenizer (docs/tuning.md)"
)


def _path_unknown(p: TuningParameter) -> str | None:
    return None if p.path in TUNABLE_FIELDS else f"'{p.path}' {_NOT_TUNABLE}"


def _float_needs_number(p: TuningParameter) -> str | None:
    field = TUNABLE_FIELDS.get(p.path)
    if p.type == ParameterType.FLOAT and field is not None and field.type != "number":
        return (
            f"type Float sets a number field, and '{p.path}' is {field.describe()}: "
            "use Int or Categorical"
        )
    return None


def _int_needs_numeric(p: TuningParameter) -> str | None:
    field = TUNABLE_FIELDS.get(p.path)
    if (
        p.type == ParameterType.INT
        and field is not None
        and field.type not in ("integer", "number")
    ):
        return (
            f"type Int sets a number or integer field, and '{p.path}' is {field.describe()}: "
            "use Categorical"
        )
    return None


def _categorical_takes_values(p: TuningParameter) -> str | None:
    if p.type == ParameterType.CATEGORICAL and (
        p.values is None or p.min is not None or p.max is not None or p.step is not None or p.log
    ):
        return "type Categorical takes values, and no min, max, step or log"
    return None


def _range_takes_bounds(p: TuningParameter) -> str | None:
    if p.type != ParameterType.CATEGORICAL and (p.min is None or p.max is None or p.values):
        return f"type {p.type.value} takes min and max, and no values"
    return None


def _min_below_max(p: TuningParameter) -> str | None:
    if p.min is not None and p.max is not None and not p.min < p.max:
        return "must be greater than min"
    return None


def _log_positive(p: TuningParameter) -> str | None:
    if p.log and p.min is not None and not p.min > 0:
        return "log: true needs min > 0"
    return None


def _log_or_step(p: TuningParameter) -> str | None:
    if p.log and p.step is not None:
        return "set step or log: true, not both"
    return None


def _int_whole(p: TuningParameter) -> str | None:
    if p.type == ParameterType.INT and any(
        v is not None and v != int(v) for v in (p.min, p.max, p.step)
    ):
        return "type Int takes whole numbers for min, max and step"
    return None


def _values_fit(p: TuningParameter) -> str | None:
    field = TUNABLE_FIELDS.get(p.path)
    if p.type != ParameterType.CATEGORICAL or p.values is None or field is None:
        return None
    if all(value_fits(field, v) for v in p.values):
        return None
    return f"values must each be {field.describe()} for '{p.path}'"


class TuningParameter(ApiModel):
    """One hyperparameter: the field it sets in the trial template, and its range."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=PARAMETER_NAME_PATTERN,
        description="A short name for tables, events and range warnings (learningRate).",
    )
    path: str = Field(
        min_length=1,
        max_length=253,
        description="The field it sets in spec.trialTemplate, dotted and camelCase, as in "
        "the LMTrainingJob spec: training.learningRate, training.warmupSteps, "
        "model.size.hiddenSize, ...",
    )
    type: ParameterType = Field(description="Float, Int (a range) or Categorical (values).")
    min: float | None = Field(
        None, ge=-_BOUND, le=_BOUND, description="Lowest value (Float, Int), inclusive."
    )
    max: float | None = Field(
        None, ge=-_BOUND, le=_BOUND, description="Highest value (Float, Int), inclusive."
    )
    log: bool = Field(False, description="Sample on a log scale (Float, Int; min > 0).")
    step: float | None = Field(
        None,
        gt=0,
        le=_BOUND,
        description="Spacing of the values (Float, Int); Grid needs it on Float parameters.",
    )
    values: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The choices (Categorical), as text: '0.001', '256', 'true', 'bf16'.",
    )

    cel_rules = [
        CelRule(
            name="parameter-path-tunable",
            rule=f"self.path in {_ALL}",
            message_expression=f'"\'" + self.path + "\' {_NOT_TUNABLE}"',
            message=f"the path {_NOT_TUNABLE}",
            check=_path_unknown,
            field_path=".path",
        ),
        CelRule(
            name="parameter-float-sets-number",
            rule=f"self.type != 'Float' || !(self.path in {_ALL}) || "
            f"(self.path in {_NUMBERS} && !(self.path in {_INTEGERS}))",
            message_expression='"type Float sets a number field, and \'" + self.path + '
            f'"\' is " + {_DESCRIPTIONS}[self.path] + ": use Int or Categorical"',
            message="type Float sets a number field: use Int or Categorical",
            check=_float_needs_number,
            field_path=".type",
        ),
        CelRule(
            name="parameter-int-sets-number",
            rule=f"self.type != 'Int' || !(self.path in {_ALL}) || self.path in {_NUMBERS}",
            message_expression='"type Int sets a number or integer field, and \'" + self.path'
            f' + "\' is " + {_DESCRIPTIONS}[self.path] + ": use Categorical"',
            message="type Int sets a number or integer field: use Categorical",
            check=_int_needs_numeric,
            field_path=".type",
        ),
        CelRule(
            name="parameter-categorical-values",
            rule="self.type != 'Categorical' || (has(self.values) && !has(self.min) && "
            "!has(self.max) && !has(self.step) && !self.log)",
            message_expression="'type Categorical takes values, and no min, max, step or log'",
            message="type Categorical takes values, and no min, max, step or log",
            check=_categorical_takes_values,
            field_path=".type",
        ),
        CelRule(
            name="parameter-range-bounds",
            rule="self.type == 'Categorical' || (has(self.min) && has(self.max) && "
            "!has(self.values))",
            message_expression="'type ' + self.type + ' takes min and max, and no values'",
            message="type Float and Int take min and max, and no values",
            check=_range_takes_bounds,
            field_path=".type",
        ),
        CelRule(
            name="parameter-min-below-max",
            rule="!has(self.min) || !has(self.max) || self.min < self.max",
            message_expression="'must be greater than min'",
            message="must be greater than min",
            check=_min_below_max,
            field_path=".max",
        ),
        CelRule(
            name="parameter-log-positive",
            rule="!self.log || !has(self.min) || self.min > 0.0",
            message_expression="'log: true needs min > 0'",
            message="log: true needs min > 0",
            check=_log_positive,
            field_path=".min",
        ),
        CelRule(
            name="parameter-log-or-step",
            rule="!self.log || !has(self.step)",
            message_expression="'set step or log: true, not both'",
            message="set step or log: true, not both",
            check=_log_or_step,
            field_path=".step",
        ),
        CelRule(
            name="parameter-int-whole",
            rule="self.type != 'Int' || ("
            "(!has(self.min) || double(int(self.min)) == self.min) && "
            "(!has(self.max) || double(int(self.max)) == self.max) && "
            "(!has(self.step) || double(int(self.step)) == self.step))",
            message_expression="'type Int takes whole numbers for min, max and step'",
            message="type Int takes whole numbers for min, max and step",
            check=_int_whole,
            field_path=".type",
        ),
        CelRule(
            name="parameter-values-fit",
            rule="self.type != 'Categorical' || !has(self.values) || "
            f"(self.path in {_INTEGERS} ? self.values.all(v, v.matches('{INTEGER_TEXT}')) : "
            f"self.path in {_NUMBERS} ? self.values.all(v, v.matches('{NUMBER_TEXT}')) : "
            f"self.path in {_BOOLEANS} ? self.values.all(v, v == 'true' || v == 'false') : "
            f"self.path in {_ENUMS} ? self.values.all(v, v in {_ENUMS}[self.path]) : true)",
            message_expression=f"'values must each be ' + {_DESCRIPTIONS}[self.path] + "
            '" for \'" + self.path + "\'"',
            message="values must each be valid for the field the path names",
            check=_values_fit,
            field_path=".values",
        ),
    ]


# --------------------------------------------------------------------------------------
# Objective, algorithm, budget, early stopping


class ObjectiveMetric(enum.StrEnum):
    VALIDATION_LOSS = "validationLoss"
    TRAIN_LOSS = "trainLoss"
    TOKENS_PER_SECOND = "tokensPerSecond"


class Goal(enum.StrEnum):
    MINIMIZE = "Minimize"
    MAXIMIZE = "Maximize"


class Objective(ApiModel):
    """What a trial is judged by."""

    metric: ObjectiveMetric = Field(
        ObjectiveMetric.VALIDATION_LOSS,
        description="validationLoss (the trial's status.validationLoss, measured at each "
        "checkpoint and at the end), trainLoss (status.loss at the end) or tokensPerSecond.",
    )
    goal: Goal | None = Field(
        None,
        description="Minimize or Maximize; unset means Minimize for the losses and Maximize "
        "for tokensPerSecond.",
    )

    @property
    def direction(self) -> Goal:
        if self.goal is not None:
            return self.goal
        return Goal.MAXIMIZE if self.metric == ObjectiveMetric.TOKENS_PER_SECOND else Goal.MINIMIZE


class AlgorithmName(enum.StrEnum):
    GRID = "Grid"
    RANDOM = "Random"
    GREEDY = "Greedy"
    SIMULATED_ANNEALING = "SimulatedAnnealing"
    BAYESIAN = "Bayesian"


class CoolingSchedule(enum.StrEnum):
    EXPONENTIAL = "Exponential"
    LINEAR = "Linear"


class GreedySettings(ApiModel):
    """Coordinate-wise hill climbing from the best point so far."""

    neighbourhood_scale: float = Field(
        0.2,
        gt=0,
        le=1,
        description="How far a move goes, as a share of each parameter's range (of its "
        "logarithm for log: true); halved whenever a whole round of moves found nothing better.",
    )


class AnnealingSettings(ApiModel):
    """Simulated annealing: moves that are worse are taken with probability
    exp(-Δ / (temperature x |best objective|)), and the temperature falls every trial."""

    initial_temperature: float = Field(
        1.0, gt=0, le=1e6, description="The temperature of the first move (relative)."
    )
    cooling: CoolingSchedule = Field(
        CoolingSchedule.EXPONENTIAL,
        description="Exponential (T x rate per trial) or Linear (down to 0 at maxTrials).",
    )
    cooling_rate: float = Field(
        0.85, gt=0, lt=1, description="The factor per trial of Exponential cooling."
    )
    neighbourhood_scale: float = Field(
        0.25,
        gt=0,
        le=1,
        description="The spread of a move, as a share of each parameter's range; it shrinks "
        "with the temperature.",
    )


class Algorithm(ApiModel):
    """How the next trial's parameters are chosen."""

    name: AlgorithmName = Field(
        AlgorithmName.BAYESIAN,
        description="Grid, Random, Greedy, SimulatedAnnealing or Bayesian (Optuna's TPE).",
    )
    seed: int = Field(
        0,
        ge=0,
        le=2147483647,
        description="Seeds every suggestion (with the trial's number), so a search is "
        "repeatable and a restarted operator suggests the same next point.",
    )
    greedy: GreedySettings = nested(GreedySettings, "Settings of Greedy.")
    simulated_annealing: AnnealingSettings = nested(
        AnnealingSettings, "Settings of SimulatedAnnealing."
    )
    startup_trials: int = Field(
        4,
        ge=1,
        le=1000,
        description="Random trials before Bayesian starts modelling, and before Greedy "
        "and SimulatedAnnealing start from the best of them.",
    )


class Budget(ApiModel):
    """How many trials, how many at once, and the workers they share."""

    max_trials: int = Field(10, ge=1, le=MAX_TRIALS, description="Trials in all.")
    parallel_trials: int = Field(1, ge=1, le=64, description="Trials running at once.")
    max_failed_trials: int = Field(
        3, ge=0, le=MAX_TRIALS, description="Failed trials after which the search fails."
    )
    max_replicas: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Workers the running trials share; the tuner gives more to the leading "
        "trials, within each trial's elastic range. Unset: parallelTrials x the template's "
        "replicas, with no reallocation.",
    )


class EarlyStoppingPolicy(enum.StrEnum):
    NONE = "None"
    MEDIAN = "Median"
    SUCCESSIVE_HALVING = "SuccessiveHalving"


class EarlyStopping(ApiModel):
    """Stopping trials that are clearly losing, from their validation loss at checkpoints."""

    policy: EarlyStoppingPolicy = Field(
        EarlyStoppingPolicy.NONE,
        description="Median (stop a trial worse at step s than the median of the completed "
        "trials at s) or SuccessiveHalving (keep the best 1/reductionFactor at each rung).",
    )
    min_steps: int = Field(
        0, ge=0, description="No trial is stopped before it has trained this many steps."
    )
    min_completed_trials: int = Field(
        2, ge=1, le=MAX_TRIALS, description="Median: completed trials needed before any stop."
    )
    reduction_factor: int = Field(
        3, ge=2, le=16, description="SuccessiveHalving: 1/this of the trials go on at each rung."
    )


# --------------------------------------------------------------------------------------
# The spec and its cross-field rules


# A trial's warm spares use the shared budget too (CEL: absent before defaulting).
_SPARES = "(has(self.trialTemplate.elastic.warmSpares) ? self.trialTemplate.elastic.warmSpares : 0)"


def _parallel_within_budget(s: LMTuningJobSpec) -> str | None:
    m = s.budget.max_replicas
    floor = s.trial_template.elastic.min_replicas
    spares = s.trial_template.elastic.warm_spares
    if m is not None and s.budget.parallel_trials * (floor + spares) > m:
        return (
            f"spec.budget.parallelTrials ({s.budget.parallel_trials}) x "
            f"(spec.trialTemplate.elastic.minReplicas ({floor}) + "
            f"spec.trialTemplate.elastic.warmSpares ({spares})) must be <= "
            f"spec.budget.maxReplicas ({m})"
        )
    return None


def _parallel_within_trials(s: LMTuningJobSpec) -> str | None:
    b = s.budget
    if b.parallel_trials > b.max_trials:
        return (
            f"spec.budget.parallelTrials ({b.parallel_trials}) must be <= "
            f"spec.budget.maxTrials ({b.max_trials})"
        )
    return None


def _paths_unique(s: LMTuningJobSpec) -> str | None:
    paths = [p.path for p in s.parameters]
    if len(set(paths)) != len(paths):
        return "spec.parameters: each path may be set by one parameter only"
    return None


def _grid_needs_steps(s: LMTuningJobSpec) -> str | None:
    if s.algorithm.name == AlgorithmName.GRID and any(
        p.type == ParameterType.FLOAT and p.step is None for p in s.parameters
    ):
        return "spec.algorithm.name Grid needs a step on every Float parameter (the grid spacing)"
    return None


def _validation_needs_holdout(s: LMTuningJobSpec) -> str | None:
    if (
        s.objective.metric == ObjectiveMetric.VALIDATION_LOSS
        and not s.trial_template.data.validation_fraction > 0
    ):
        return (
            "spec.objective.metric validationLoss needs held-out text: set "
            "spec.trialTemplate.data.validationFraction above 0"
        )
    return None


def _stopping_needs_checkpoints(s: LMTuningJobSpec) -> str | None:
    if s.early_stopping.policy != EarlyStoppingPolicy.NONE and (
        s.objective.metric != ObjectiveMetric.VALIDATION_LOSS or s.trial_template.checkpoint is None
    ):
        return (
            f"spec.earlyStopping.policy {s.early_stopping.policy.value} compares validation "
            "losses at checkpoints: it needs spec.objective.metric validationLoss and "
            "spec.trialTemplate.checkpoint"
        )
    return None


class LMTuningJobSpec(ApiModel):
    """Desired state of an LMTuningJob."""

    trial_template: LMTrainingJobSpec = Field(
        description="The LMTrainingJob spec every trial starts from; each parameter sets one "
        "of its fields, and each trial's checkpoint path gets the trial's name appended."
    )
    parameters: Annotated[list[TuningParameter], unique_by("name")] = Field(
        min_length=1,
        max_length=16,
        description="The hyperparameters searched.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    objective: Objective = nested(Objective, "What a trial is judged by.")
    algorithm: Algorithm = nested(Algorithm, "How parameters are chosen.")
    budget: Budget = nested(Budget, "Trials and the workers they share.")
    early_stopping: EarlyStopping = nested(EarlyStopping, "Stopping losing trials early.")

    cel_rules = [
        CelRule(
            name="parallel-trials-within-max-replicas",
            rule="!has(self.budget.maxReplicas) || self.budget.parallelTrials * "
            "(self.trialTemplate.elastic.minReplicas + " + _SPARES + ") <= "
            "self.budget.maxReplicas",
            message_expression="'spec.budget.parallelTrials (' + "
            "string(self.budget.parallelTrials) + ') x (spec.trialTemplate.elastic.minReplicas"
            " (' + string(self.trialTemplate.elastic.minReplicas) + ') + "
            "spec.trialTemplate.elastic.warmSpares (' + string(" + _SPARES + ") + ')) must be "
            "<= spec.budget.maxReplicas (' + string(self.budget.maxReplicas) + ')'",
            message="spec.budget.parallelTrials x (spec.trialTemplate.elastic.minReplicas + "
            "warmSpares) must be <= spec.budget.maxReplicas",
            check=_parallel_within_budget,
        ),
        CelRule(
            name="parallel-trials-within-max-trials",
            rule="self.budget.parallelTrials <= self.budget.maxTrials",
            message_expression="'spec.budget.parallelTrials (' + "
            "string(self.budget.parallelTrials) + ') must be <= spec.budget.maxTrials (' + "
            "string(self.budget.maxTrials) + ')'",
            message="spec.budget.parallelTrials must be <= spec.budget.maxTrials",
            check=_parallel_within_trials,
        ),
        CelRule(
            name="parameter-paths-unique",
            rule="self.parameters.all(p, self.parameters.exists_one(q, q.path == p.path))",
            message_expression="'spec.parameters: each path may be set by one parameter only'",
            message="spec.parameters: each path may be set by one parameter only",
            check=_paths_unique,
        ),
        CelRule(
            name="grid-needs-steps",
            rule="self.algorithm.name != 'Grid' || "
            "self.parameters.all(p, p.type != 'Float' || has(p.step))",
            message_expression="'spec.algorithm.name Grid needs a step on every Float "
            "parameter (the grid spacing)'",
            message="spec.algorithm.name Grid needs a step on every Float parameter",
            check=_grid_needs_steps,
        ),
        CelRule(
            name="validation-needs-holdout",
            rule="self.objective.metric != 'validationLoss' || "
            "self.trialTemplate.data.validationFraction > 0.0",
            message_expression="'spec.objective.metric validationLoss needs held-out text: "
            "set spec.trialTemplate.data.validationFraction above 0'",
            message="spec.objective.metric validationLoss needs "
            "spec.trialTemplate.data.validationFraction above 0",
            check=_validation_needs_holdout,
        ),
        CelRule(
            name="early-stopping-needs-checkpoints",
            rule="self.earlyStopping.policy == 'None' || "
            "(self.objective.metric == 'validationLoss' && has(self.trialTemplate.checkpoint))",
            message_expression="'spec.earlyStopping.policy ' + self.earlyStopping.policy + "
            "' compares validation losses at checkpoints: it needs spec.objective.metric "
            "validationLoss and spec.trialTemplate.checkpoint'",
            message="spec.earlyStopping needs spec.objective.metric validationLoss and "
            "spec.trialTemplate.checkpoint",
            check=_stopping_needs_checkpoints,
        ),
    ]


# --------------------------------------------------------------------------------------
# Status

MAX_TRIAL_HISTORY = 32
MAX_DECISIONS = 20
MAX_RANGE_WARNINGS = 16


class TuningPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TuningConditionType(enum.StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RANGE_WARNING = "RangeWarning"
    SEARCH_SPACE_CHANGED = "SearchSpaceChanged"


class TrialState(enum.StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"


class ObjectivePoint(ApiModel):
    """The objective of a trial at one checkpoint."""

    step: int = Field(ge=0, description="Training step.")
    value: float = Field(description="The objective at that step.")


class TrialRecord(ApiModel):
    """One trial: what it tried and how it went. The search is rebuilt from these."""

    name: str = Field(max_length=253, description="The trial's LMTrainingJob.")
    number: int = Field(ge=0, description="Its number in the search, from 0.")
    parameters: dict[str, str] = Field(
        description="Parameter name → value, as text (floats in full precision)."
    )
    search_space: str | None = Field(
        None,
        max_length=64,
        description="The fingerprint of spec.parameters when the trial was proposed; a "
        "trial whose fingerprint differs from the current one is from an earlier search "
        "space (see the SearchSpaceChanged condition).",
    )
    state: TrialState = Field(description="Running, Succeeded, Failed or EarlyStopped.")
    objective: float | None = Field(None, description="The objective: final, or the latest.")
    history: list[ObjectivePoint] | None = Field(
        None,
        max_length=MAX_TRIAL_HISTORY,
        description="The objective at checkpoints, oldest first.",
    )
    replicas: int | None = Field(None, ge=0, description="Workers the tuner gives it.")
    reason: str | None = Field(
        None, max_length=1024, description="Why it failed or was stopped early."
    )
    start_time: datetime | None = None
    completion_time: datetime | None = None


class BestTrial(ApiModel):
    """The best trial so far."""

    name: str = Field(
        max_length=253,
        description="Its LMTrainingJob (serve it with LMService spec.model.fromTrainingJob.name).",
    )
    parameters: dict[str, str] = Field(description="Parameter name → value.")
    objective: float = Field(description="Its objective.")


class ReallocationDecision(ApiModel):
    """One change of a running trial's workers, and why."""

    time: datetime = Field(description="When it was decided.")
    trial: str = Field(max_length=253, description="The trial's LMTrainingJob.")
    from_: int = Field(alias="from", ge=0, description="Workers before.")
    to: int = Field(ge=0, description="Workers after.")
    reason: str = Field(max_length=1024, description="Why, in words.")


class LMTuningJobStatus(ApiModel):
    """Observed state of an LMTuningJob, written by the operator."""

    phase: TuningPhase | None = Field(None, description="Pending, Running, Succeeded, Failed.")
    conditions: list[Condition] | None = Field(
        None, max_length=32, json_schema_extra=CONDITIONS_SCHEMA_EXTRA
    )
    observed_generation: int | None = Field(None, ge=0, description="Generation last acted on.")
    trials: list[TrialRecord] | None = Field(
        None, max_length=MAX_TRIALS, description="One row per trial, in the order they started."
    )
    best_trial: BestTrial | None = None
    range_warnings: list[str] | None = Field(
        None,
        max_length=MAX_RANGE_WARNINGS,
        description="Where the best point sits at the edge of a range ('widen "
        "learningRate above 0.003').",
    )
    reallocations: list[ReallocationDecision] | None = Field(
        None,
        max_length=MAX_DECISIONS,
        description=f"The last {MAX_DECISIONS} reallocations of workers, newest last.",
    )
    succeeded_trials: int | None = Field(None, ge=0, description="Trials that completed.")
    failed_trials: int | None = Field(None, ge=0, description="Trials that failed.")
    start_time: datetime | None = None
    completion_time: datetime | None = None


# Trials are named <job>-t<number> (number < MAX_TRIALS) and must be valid LMTrainingJob names.
MAX_TUNING_NAME_LENGTH = MAX_RESOURCE_NAME_LENGTH - len(f"-t{MAX_TRIALS - 1}")
TUNING_NAME_RULES = resource_name_rules(
    MAX_TUNING_NAME_LENGTH, "its trials (<name>-t<number>) get valid LMTrainingJob names"
)


def trial_name(job: str, number: int) -> str:
    """The deterministic name of a search's trial number `number`."""
    return f"{job}-t{number}"


class TuningObjectMeta(ObjectMeta):
    """metadata, with the shorter name limit that leaves room for the trials' suffix."""

    cel_rules = TUNING_NAME_RULES


class LMTuningJob(ApiModel):
    """A hyperparameter search whose trials are elastic LMTrainingJobs."""

    api_version: Literal["elasticlm.io/v1alpha1"] = "elasticlm.io/v1alpha1"
    kind: Literal["LMTuningJob"] = "LMTuningJob"
    metadata: TuningObjectMeta = Field(default_factory=TuningObjectMeta)
    spec: LMTuningJobSpec
    status: LMTuningJobStatus | None = None
