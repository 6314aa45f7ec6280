"""`kubectl lm describe`: one object's status, conditions, decisions and events (pure).

The page is a list of fields (`FIELDS`: a label and a function giving its text, or
None to leave the line out) followed by sections (`SECTIONS`: a title and a function
giving a table). Each kind has its own lists; a feature that adds status (an
autoscaler's recommendation, a tuning job's trials) adds a field or a section here,
and a kind without an entry gets the common ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lmoperator.api import kinds
from lmoperator.plugin.tables import (
    MISSING,
    age,
    fraction,
    get,
    loss,
    model_source,
    number,
    parse_time,
    rate,
    render_table,
    text,
)

Obj = Mapping[str, Any]
INDENT = "  "


@dataclass(frozen=True)
class Field:
    label: str
    value: Callable[[Obj, datetime], str | None]


@dataclass(frozen=True)
class Section:
    title: str
    table: Callable[[Obj, Sequence[Obj], datetime], list[str]]
    empty: str = "<none>"


def when(value: Any, now: datetime) -> str | None:
    """`2026-01-02T03:04:05Z (5m ago)`, or None when absent."""
    if parse_time(value) is None:
        return None
    return f"{value} ({age(value, now)} ago)"


def _figure(value: Any) -> str:
    x = number(value)
    if x is None:
        return text(value)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


# --------------------------------------------------------------------------------------
# Fields


def _kind(obj: Obj, now: datetime) -> str:
    return f"{text(obj.get('kind'))} ({text(obj.get('apiVersion'))})"


def _job_workers(obj: Obj, now: datetime) -> str:
    status = obj.get("status") or {}
    parts = [
        f"{_figure(get(obj, 'spec', 'replicas'))} desired",
        f"{_figure(status.get('replicas') or 0)} exist",
        f"{_figure(status.get('readyReplicas') or 0)} ready",
    ]
    if number(status.get("worldSize")) is not None:
        parts.append(f"world size {_figure(status['worldSize'])}")
    low = get(obj, "spec", "elastic", "minReplicas")
    high = get(obj, "spec", "elastic", "maxReplicas") or get(obj, "spec", "replicas")
    return ", ".join(parts) + (f" (elastic {_figure(low)}..{_figure(high)})" if low else "")


def _job_spares(obj: Obj, now: datetime) -> str | None:
    """The warm spares (spec.elastic.warmSpares), when the job has or had any."""
    wanted = get(obj, "spec", "elastic", "warmSpares") or 0
    spares = get(obj, "status", "spares")
    if not wanted and not isinstance(spares, Mapping):
        return None
    seen = spares if isinstance(spares, Mapping) else {}
    return (
        f"{_figure(wanted)} wanted, {_figure(seen.get('total') or 0)} exist, "
        f"{_figure(seen.get('ready') or 0)} standing by, "
        f"{_figure(seen.get('promoted') or 0)} promoted to workers"
    )


def _job_progress(obj: Obj, now: datetime) -> str | None:
    status = obj.get("status") or {}
    if number(status.get("step")) is None:
        return None
    parts = [f"step {fraction(status.get('step'), get(obj, 'spec', 'training', 'steps'))}"]
    if number(status.get("loss")) is not None:
        parts.append(f"loss {loss(status['loss'])}")
    if number(status.get("validationLoss")) is not None:
        parts.append(f"validation loss {loss(status['validationLoss'])}")
    if number(status.get("tokensPerSecond")) is not None:
        parts.append(f"{rate(status['tokensPerSecond'])} tokens/s")
    return ", ".join(parts)


def _job_checkpoint(obj: Obj, now: datetime) -> str | None:
    last = get(obj, "status", "lastCheckpoint")
    if not isinstance(last, Mapping) or number(last.get("step")) is None:
        return None
    out = f"step {_figure(last['step'])}"
    saved = when(last.get("time"), now)
    return (
        out
        + (f", saved {saved}" if saved else "")
        + (f", {last['path']}" if last.get("path") else "")
    )


def _job_held_out(obj: Obj, now: datetime) -> str | None:
    """`3.912 before training, 3.407 now (-0.505)`: the validation loss's way."""
    before = number(get(obj, "status", "initialValidationLoss"))
    latest = number(get(obj, "status", "validationLoss"))
    if before is None and latest is None:
        return None
    if before is None:
        return f"{loss(latest)} now"
    if latest is None:
        return f"{loss(before)} before training"
    return f"{loss(before)} before training, {loss(latest)} now ({latest - before:+.3f})"


def _job_precision(obj: Obj, now: datetime) -> str | None:
    precision = get(obj, "status", "precision")
    if not isinstance(precision, Mapping) or not precision.get("chosen"):
        return None
    return f"{text(precision['chosen'])}: {text(precision.get('reason'))}"


def _job_restarts(obj: Obj, now: datetime) -> str:
    restarts = _figure(get(obj, "status", "restarts") or 0)
    limit = get(obj, "spec", "elastic", "maxRestarts")
    return restarts + (f" (spec.elastic.maxRestarts {_figure(limit)})" if limit is not None else "")


def _service_replicas(obj: Obj, now: datetime) -> str:
    status = obj.get("status") or {}
    return ", ".join(
        [
            f"{_figure(get(obj, 'spec', 'replicas'))} desired",
            f"{_figure(status.get('replicas') or 0)} exist",
            f"{_figure(status.get('readyReplicas') or 0)} ready",
            f"{_figure(status.get('updatedReplicas') or 0)} updated",
        ]
    )


def _service_model(obj: Obj, now: datetime) -> str:
    served = get(obj, "status", "model", "checkpoint")
    return model_source(obj) + (f" (serving: {served})" if served else "")


def _service_perplexity(obj: Obj, now: datetime) -> str | None:
    before = number(get(obj, "status", "model", "perplexityBefore"))
    after = number(get(obj, "status", "model", "perplexityAfter"))
    if before is None or after is None:
        return None
    change = f"{(after / before - 1) * 100:+.1f}%" if before else MISSING
    limit = number(get(obj, "spec", "compression", "maxPerplexityIncrease"))
    budget = f", limit +{limit * 100:g}%" if limit is not None else ""
    return f"{before:.3f} before compression, {after:.3f} after ({change}{budget})"


COMMON_HEAD = (
    Field("Name", lambda o, n: text(get(o, "metadata", "name"))),
    Field("Namespace", lambda o, n: text(get(o, "metadata", "namespace"))),
    Field("Kind", _kind),
    Field("Created", lambda o, n: when(get(o, "metadata", "creationTimestamp"), n)),
    Field("Phase", lambda o, n: text(get(o, "status", "phase"))),
)

FIELDS: dict[str, tuple[Field, ...]] = {
    kinds.TRAINING_JOB.kind: (
        *COMMON_HEAD,
        Field("Workers", _job_workers),
        Field("Spares", _job_spares),
        Field("Progress", _job_progress),
        Field("Checkpoint", _job_checkpoint),
        Field("Held-out loss", _job_held_out),
        Field("Precision", _job_precision),
        Field("Restarts", _job_restarts),
        Field("Autoscaling", lambda o, n: get(o, "spec", "autoscaling", "policy")),
        Field("Started", lambda o, n: when(get(o, "status", "startTime"), n)),
        Field("Completed", lambda o, n: when(get(o, "status", "completionTime"), n)),
    ),
    kinds.SERVICE.kind: (
        *COMMON_HEAD,
        Field("Replicas", _service_replicas),
        Field("Model", _service_model),
        Field("Precision", lambda o, n: get(o, "status", "model", "precision")),
        Field("Perplexity", _service_perplexity),
        Field("Endpoint", lambda o, n: text(get(o, "status", "endpoint"))),
        Field(
            "Autoscaling",
            lambda o, n: (
                "{}..{} replicas".format(
                    _figure(get(o, "spec", "autoscaling", "minReplicas") or 1),
                    _figure(get(o, "spec", "autoscaling", "maxReplicas")),
                )
                if isinstance(get(o, "spec", "autoscaling"), Mapping)
                else "manual (spec.replicas)"
            ),
        ),
    ),
}


FIELDS[kinds.TUNING_JOB.kind] = (
    *COMMON_HEAD,
    Field(
        "Search",
        lambda o, n: "{} (seed {}), {} of {} trials, {} at a time".format(
            text(get(o, "spec", "algorithm", "name")),
            _figure(get(o, "spec", "algorithm", "seed") or 0),
            len(get(o, "status", "trials") or []),
            _figure(get(o, "spec", "budget", "maxTrials")),
            _figure(get(o, "spec", "budget", "parallelTrials") or 1),
        ),
    ),
    Field(
        "Objective",
        lambda o, n: text(get(o, "spec", "objective", "metric") or "validationLoss"),
    ),
    Field(
        "Best",
        lambda o, n: (
            "{} ({}) {}".format(
                text(get(o, "status", "bestTrial", "name")),
                loss(get(o, "status", "bestTrial", "objective")),
                _parameters(get(o, "status", "bestTrial", "parameters")),
            )
            if isinstance(get(o, "status", "bestTrial"), Mapping)
            else None
        ),
    ),
    Field(
        "Range warnings",
        lambda o, n: "; ".join(get(o, "status", "rangeWarnings") or []) or None,
    ),
    Field("Started", lambda o, n: when(get(o, "status", "startTime"), n)),
    Field("Completed", lambda o, n: when(get(o, "status", "completionTime"), n)),
)


def _parameters(values: Any) -> str:
    if not isinstance(values, Mapping):
        return ""
    return " ".join(f"{k}={v}" for k, v in values.items())


# --------------------------------------------------------------------------------------
# Sections


def conditions_table(obj: Obj, events: Sequence[Obj], now: datetime) -> list[str]:
    rows = [
        [
            text(c.get("type")),
            text(c.get("status")),
            text(c.get("reason")),
            age(c.get("lastTransitionTime"), now),
            str(c.get("message") or ""),
        ]
        for c in get(obj, "status", "conditions") or []
        if isinstance(c, Mapping)
    ]
    return render_table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows) if rows else []


def metrics_text(metrics: Any) -> str:
    """`tokensPerSecond=1234.5 worldSize=2`: the figures behind a decision."""
    if not isinstance(metrics, Mapping) or not metrics:
        return ""
    return " ".join(f"{key}={_figure(value)}" for key, value in metrics.items())


def scaling_history_table(obj: Obj, events: Sequence[Obj], now: datetime) -> list[str]:
    """Oldest first, as status.scalingHistory keeps them."""
    rows = [
        [
            age(d.get("time"), now),
            _figure(d.get("from")),
            _figure(d.get("to")),
            str(d.get("reason") or ""),
            metrics_text(d.get("metrics")),
        ]
        for d in get(obj, "status", "scalingHistory") or []
        if isinstance(d, Mapping)
    ]
    return render_table(["AGE", "FROM", "TO", "REASON", "METRICS"], rows) if rows else []


def _event_time(event: Obj) -> datetime | None:
    return (
        parse_time(event.get("lastTimestamp"))
        or parse_time(event.get("eventTime"))
        or parse_time(get(event, "metadata", "creationTimestamp"))
    )


def events_table(obj: Obj, events: Sequence[Obj], now: datetime) -> list[str]:
    """As kubectl describe prints them: oldest first, `5s (x3 over 2m)` for repeats."""

    def seen(event: Obj) -> str:
        last = _event_time(event)
        shown = age(last.isoformat(), now) if last else MISSING
        count = number(event.get("count"))
        first = parse_time(event.get("firstTimestamp"))
        if count and count > 1 and first is not None:
            shown += f" (x{int(count)} over {age(first.isoformat(), now)})"
        return shown

    ordered = sorted(events, key=lambda e: _event_time(e) or now)
    rows = [
        [
            text(e.get("type")),
            text(e.get("reason")),
            seen(e),
            text(get(e, "source", "component") or e.get("reportingComponent")),
            str(e.get("message") or e.get("note") or "").strip(),
        ]
        for e in ordered
    ]
    return render_table(["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows) if rows else []


def trials_table(obj: Obj, events: Sequence[Obj], now: datetime) -> list[str]:
    """One row per trial: its parameters, objective (latest or final), state and why."""
    rows = [
        [
            text(t.get("name")),
            text(t.get("state")),
            _figure(t.get("replicas") or 0),
            loss(t.get("objective")),
            _parameters(t.get("parameters")),
            str(t.get("reason") or ""),
        ]
        for t in get(obj, "status", "trials") or []
        if isinstance(t, Mapping)
    ]
    headers = ["TRIAL", "STATE", "WORKERS", "OBJECTIVE", "PARAMETERS", "REASON"]
    return render_table(headers, rows) if rows else []


def reallocations_table(obj: Obj, events: Sequence[Obj], now: datetime) -> list[str]:
    rows = [
        [
            age(d.get("time"), now),
            text(d.get("trial")),
            _figure(d.get("from")),
            _figure(d.get("to")),
            str(d.get("reason") or ""),
        ]
        for d in get(obj, "status", "reallocations") or []
        if isinstance(d, Mapping)
    ]
    return render_table(["AGE", "TRIAL", "FROM", "TO", "REASON"], rows) if rows else []


COMMON_SECTIONS = (
    Section("Conditions", conditions_table),
    Section("Scaling history", scaling_history_table),
    Section("Events", events_table),
)
SECTIONS: dict[str, tuple[Section, ...]] = {
    kinds.TRAINING_JOB.kind: COMMON_SECTIONS,
    kinds.SERVICE.kind: COMMON_SECTIONS,
    kinds.TUNING_JOB.kind: (
        Section("Conditions", conditions_table),
        Section("Trials", trials_table),
        Section("Reallocations", reallocations_table),
        Section("Events", events_table),
    ),
}


def describe(kind: kinds.ResourceKind, obj: Obj, events: Sequence[Obj], now: datetime) -> list[str]:
    """The whole page, line by line."""
    fields = [
        (f.label, value)
        for f in FIELDS.get(kind.kind, COMMON_HEAD)
        if (value := f.value(obj, now)) is not None
    ]
    width = max(len(label) for label, _ in fields) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in fields]
    for section in SECTIONS.get(kind.kind, COMMON_SECTIONS):
        table = section.table(obj, events, now)
        lines.append(f"{section.title}:")
        lines += [INDENT + row for row in table] if table else [INDENT + section.empty]
    return lines
