"""`kubectl lm get`: one table per kind, as kubectl prints them (pure).

Each kind has its columns here (`COLUMNS`): a header and a function of the object and
the time. A kind without an entry gets NAME, PHASE and AGE, so a kind added to the
registry is listed at once; its own columns are one entry in `COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lmoperator.api import kinds

MISSING = "-"


# --------------------------------------------------------------------------------------
# Values


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration: what kubectl prints as AGE."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the API (None when absent or malformed)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age(timestamp: Any, now: datetime) -> str:
    moment = parse_time(timestamp)
    return human_duration((now - moment).total_seconds()) if moment else MISSING


def number(value: Any) -> float | None:
    """A JSON number (never a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def rate(value: Any) -> str:
    """Tokens per second, short: 812.3, 12.3k, 1.2M."""
    x = number(value)
    if x is None:
        return MISSING
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= limit:
            return f"{x / limit:.1f}{suffix}"
    return f"{x:.1f}"


def loss(value: Any) -> str:
    x = number(value)
    return MISSING if x is None else f"{x:.3f}"


def fraction(part: Any, whole: Any) -> str:
    """`2/3`; a missing part counts as 0, a missing whole is left out."""
    p = number(part)
    w = number(whole)
    left = str(int(p)) if p is not None else "0"
    return f"{left}/{int(w)}" if w is not None else left


def get(obj: Mapping[str, Any], *path: str) -> Any:
    """obj[path[0]][path[1]]...; None where any step is missing or not a mapping."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


# --------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Mapping[str, Any], datetime], str]
    wide: bool = False  # shown with -o wide only


def _name(obj: Mapping[str, Any], now: datetime) -> str:
    return text(get(obj, "metadata", "name"))


def _phase(obj: Mapping[str, Any], now: datetime) -> str:
    return text(get(obj, "status", "phase"))


def _age(obj: Mapping[str, Any], now: datetime) -> str:
    return age(get(obj, "metadata", "creationTimestamp"), now)


def _ready(obj: Mapping[str, Any], now: datetime) -> str:
    return fraction(get(obj, "status", "readyReplicas"), get(obj, "spec", "replicas"))


def _step(obj: Mapping[str, Any], now: datetime) -> str:
    step = number(get(obj, "status", "step"))
    target = number(get(obj, "spec", "training", "steps"))
    if step is None:
        return MISSING if target is None else f"0/{int(target)}"
    return f"{int(step)}/{int(target)}" if target is not None else str(int(step))


def _world(obj: Mapping[str, Any], now: datetime) -> str:
    world = number(get(obj, "status", "worldSize"))
    return MISSING if world is None else str(int(world))


def _restarts(obj: Mapping[str, Any], now: datetime) -> str:
    restarts = number(get(obj, "status", "restarts"))
    return str(int(restarts)) if restarts is not None else "0"


def _checkpoint(obj: Mapping[str, Any], now: datetime) -> str:
    step = number(get(obj, "status", "lastCheckpoint", "step"))
    return MISSING if step is None else f"step {int(step)}"


def model_source(obj: Mapping[str, Any]) -> str:
    """Where an LMService's model comes from, in a few words."""
    model = get(obj, "spec", "model") or {}
    job = get(model, "fromTrainingJob", "name")
    if job:
        step = get(model, "fromTrainingJob", "step")
        return f"{kinds.TRAINING_JOB.short_name}/{job}" + (f"@{step}" if step is not None else "")
    for key in ("checkpoint", "hf"):
        path = get(model, key, "path")
        if path:
            claim = get(model, key, "claimName")
            return f"{key}:{claim}:{path}" if claim else f"{key}:{path}"
    return MISSING


COLUMNS: dict[str, tuple[Column, ...]] = {
    kinds.TRAINING_JOB.kind: (
        Column("NAME", _name),
        Column("PHASE", _phase),
        Column("READY", _ready),
        Column("WORLD", _world),
        Column("STEP", _step),
        Column("LOSS", lambda o, n: loss(get(o, "status", "loss"))),
        Column("TOKENS/S", lambda o, n: rate(get(o, "status", "tokensPerSecond"))),
        Column("RESTARTS", _restarts, wide=True),
        Column("CHECKPOINT", _checkpoint, wide=True),
        Column("AGE", _age),
    ),
    kinds.SERVICE.kind: (
        Column("NAME", _name),
        Column("PHASE", _phase),
        Column("READY", _ready),
        Column("MODEL", lambda o, n: model_source(o)),
        Column("ENDPOINT", lambda o, n: text(get(o, "status", "endpoint"))),
        Column("PRECISION", lambda o, n: text(get(o, "status", "model", "precision")), wide=True),
        Column("UPDATED", lambda o, n: text(get(o, "status", "updatedReplicas")), wide=True),
        Column("AGE", _age),
    ),
    kinds.TUNING_JOB.kind: (
        Column("NAME", _name),
        Column("PHASE", _phase),
        Column("ALGORITHM", lambda o, n: text(get(o, "spec", "algorithm", "name"))),
        Column(
            "TRIALS",
            lambda o, n: fraction(
                len(get(o, "status", "trials") or []), get(o, "spec", "budget", "maxTrials")
            ),
        ),
        Column("BEST", lambda o, n: text(get(o, "status", "bestTrial", "name"))),
        Column("OBJECTIVE", lambda o, n: loss(get(o, "status", "bestTrial", "objective"))),
        Column("AGE", _age),
    ),
}
GENERIC_COLUMNS = (Column("NAME", _name), Column("PHASE", _phase), Column("AGE", _age))


# --------------------------------------------------------------------------------------
# Tables


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns three spaces apart, as kubectl's tab writer prints them."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def get_table(
    kind: kinds.ResourceKind,
    objects: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    wide: bool = False,
    namespaces: bool = False,
    qualify: bool = False,
) -> list[str]:
    """The table of one kind: NAMESPACE first with `namespaces` (-A), names as
    `KIND/NAME` with `qualify` (several kinds in one listing), as kubectl does."""
    columns = [c for c in COLUMNS.get(kind.kind, GENERIC_COLUMNS) if wide or not c.wide]
    headers = [c.header for c in columns]
    rows = []
    for obj in sorted(
        objects, key=lambda o: (get(o, "metadata", "namespace") or "", _name(o, now))
    ):
        row = [c.value(obj, now) for c in columns]
        if qualify:
            row[0] = f"{kind.short_name}/{row[0]}"
        if namespaces:
            row.insert(0, text(get(obj, "metadata", "namespace")))
        rows.append(row)
    if namespaces:
        headers.insert(0, "NAMESPACE")
    return render_table(headers, rows)
