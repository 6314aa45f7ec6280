"""The search space of an LMTuningJob: Optuna distributions, values as status text, and
the unit cube the neighbourhood samplers move in."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lmoperator.api.tuningjob import ParameterType, TuningParameter


def distribution(p: TuningParameter) -> BaseDistribution:
    """The Optuna distribution of one parameter (its range or its choices)."""
    if p.type == ParameterType.CATEGORICAL:
        return CategoricalDistribution(list(p.values or ()))
    # The API's rules: a range has both bounds.
    assert p.min is not None
    assert p.max is not None
    if p.type == ParameterType.INT:
        step = int(p.step) if p.step is not None else 1
        low, high = int(p.min), int(p.max)
        # Optuna wants high on the grid of low + k * step.
        high = low + (high - low) // step * step
        return IntDistribution(low, high, log=p.log, step=step)
    if p.step is not None:
        top = p.min + math.floor((p.max - p.min) / p.step + 1e-9) * p.step
        return FloatDistribution(p.min, _round(top), step=p.step)
    return FloatDistribution(p.min, p.max, log=p.log)


def search_space(parameters: Sequence[TuningParameter]) -> dict[str, BaseDistribution]:
    """Parameter name → distribution, sorted by name (Optuna's grid order)."""
    return {p.name: distribution(p) for p in sorted(parameters, key=lambda p: p.name)}


def grid(parameters: Sequence[TuningParameter]) -> dict[str, list[Any]]:
    """Every value of every parameter, for the Grid algorithm (Float parameters have steps)."""
    points: dict[str, list[Any]] = {}
    for name, dist in search_space(parameters).items():
        if isinstance(dist, CategoricalDistribution):
            points[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            points[name] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            assert isinstance(dist, FloatDistribution)
            assert dist.step is not None  # the API's rules: Grid needs steps on Float
            count = round((dist.high - dist.low) / dist.step) + 1
            points[name] = [_round(dist.low + i * dist.step) for i in range(count)]
    return points


def _round(value: float) -> float:
    """A grid value without the float noise of low + i * step (0.30000000000000004)."""
    return float(f"{value:.12g}")


# --------------------------------------------------------------------------------------
# Values as status text


def to_text(value: Any) -> str:
    """A parameter value as status records it: floats in full (round-trip) precision."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def from_text(p: TuningParameter, text: str) -> Any:
    """A value recorded in status, typed as the parameter's distribution holds it."""
    if p.type == ParameterType.FLOAT:
        return float(text)
    if p.type == ParameterType.INT:
        return int(text)
    return text


def fingerprint(parameters: Sequence[TuningParameter]) -> str:
    """A short, stable name of the search space: the parameters' definitions (their
    order aside). Two specs with the same fingerprint search the same space."""
    wire = sorted((p.to_wire() for p in parameters), key=lambda w: str(w["name"]))
    digest = hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def params_from_text(
    parameters: Sequence[TuningParameter], texts: Mapping[str, str]
) -> dict[str, Any] | None:
    """Typed values of a recorded trial, or None when it does not fit the current
    parameters (a parameter added, removed or retyped since it ran)."""
    by_name = {p.name: p for p in parameters}
    if set(texts) != set(by_name):
        return None
    try:
        values = {name: from_text(by_name[name], text) for name, text in texts.items()}
    except ValueError:
        return None
    space = search_space(parameters)
    if not all(
        space[name]._contains(space[name].to_internal_repr(v)) for name, v in values.items()
    ):
        return None
    return values


# --------------------------------------------------------------------------------------
# The unit interval of a range (its logarithm's for log: true)


def to_unit(dist: FloatDistribution | IntDistribution, value: float) -> float:
    low, high, v = float(dist.low), float(dist.high), float(value)
    if dist.log:
        low, high, v = math.log(low), math.log(high), math.log(v)
    return 0.0 if high == low else (v - low) / (high - low)


def from_unit(dist: FloatDistribution | IntDistribution, u: float) -> float | int:
    """The value at `u` in [0, 1] (clipped), on the distribution's step grid."""
    u = min(1.0, max(0.0, u))
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if isinstance(dist, IntDistribution):
        step = dist.step
        snapped = dist.low + round((value - dist.low) / step) * step
        return int(min(dist.high, max(dist.low, snapped)))
    if dist.step is not None:
        snapped_f = dist.low + round((value - dist.low) / dist.step) * dist.step
        return _round(min(dist.high, max(dist.low, snapped_f)))
    return min(high, max(low, value))
