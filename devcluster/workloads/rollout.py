"""How a Deployment sizes its ReplicaSets (pure), after pkg/controller/deployment
(rolling.go, recreate.go, sync.go) and its util package.

- `max_surge`/`max_unavailable`: ints, or percentages of the desired replicas, surge
  rounded up and unavailability rounded down; both 0 makes unavailability 1
  (`resolve_fenceposts`), and unavailability never exceeds the desired replicas.
- `rollout_step`: one pass of a rollout. RollingUpdate scales the new ReplicaSet up as
  far as maxSurge allows; when it cannot, it scales old ReplicaSets down, first the
  unavailable pods of old ReplicaSets, then as far as maxUnavailable allows, oldest
  ReplicaSet first. Recreate scales every old ReplicaSet to 0, waits until no old pod
  runs, then creates the new ReplicaSet at full size.
- `proportional_scale`: a scaling event (spec.replicas changed mid-rollout, or while
  paused) spreads the change over the active ReplicaSets in proportion to their size.
- `history_to_delete`: old ReplicaSets beyond revisionHistoryLimit, lowest revision
  first, only those scaled to 0 and settled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from devcluster.resources.apps import RECREATE, ROLLING_UPDATE
from devcluster.store import Obj
from devcluster.values import as_dict

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


def _int_annotation(annotations: dict[str, Any], key: str) -> int | None:
    try:
        return int(str(annotations[key]))
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class RolloutStrategy:
    type: str = ROLLING_UPDATE
    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"

    @classmethod
    def of(cls, deployment: Obj) -> RolloutStrategy:
        strategy = as_dict(as_dict(deployment.get("spec")).get("strategy"))
        rolling = as_dict(strategy.get("rollingUpdate"))
        return cls(
            str(strategy.get("type") or ROLLING_UPDATE),
            rolling.get("maxSurge", "25%"),
            rolling.get("maxUnavailable", "25%"),
        )


@dataclass(frozen=True)
class ReplicaSetState:
    """What the Deployment controller reads of one of its ReplicaSets."""

    name: str
    replicas: int  # spec.replicas
    created: float = 0.0
    current: int = 0  # status.replicas
    ready: int = 0
    available: int = 0
    revision: int = 0
    desired_annotation: int | None = None
    max_replicas_annotation: int | None = None
    generation: int = 1
    observed_generation: int = 1
    deleting: bool = False
    uid: str = ""

    @classmethod
    def of(cls, rs: Obj, created: float) -> ReplicaSetState:
        m, spec, status = rs["metadata"], as_dict(rs.get("spec")), as_dict(rs.get("status"))
        annotations = as_dict(m.get("annotations"))
        return cls(
            name=m["name"],
            uid=m.get("uid", ""),
            replicas=int(spec.get("replicas", 1) or 0),
            created=created,
            current=int(status.get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            revision=_int_annotation(annotations, REVISION) or 0,
            desired_annotation=_int_annotation(annotations, DESIRED_REPLICAS),
            max_replicas_annotation=_int_annotation(annotations, MAX_REPLICAS),
            generation=int(m.get("generation") or 1),
            observed_generation=int(status.get("observedGeneration") or 0),
            deleting=bool(m.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class Scale:
    """Set a ReplicaSet's spec.replicas (and refresh its replica annotations)."""

    name: str
    replicas: int


@dataclass(frozen=True)
class RolloutStep:
    """One pass of a rollout: scale these ReplicaSets, or first create the new one."""

    scales: tuple[Scale, ...] = field(default_factory=tuple)
    create_new: bool = False


# --------------------------------------------------------------------------- arithmetic


def scaled_value(value: int | str, total: int, round_up: bool) -> int:
    """An int, or a percentage of `total` (intstr.GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        return int(text)
    fraction = int(text[:-1]) * total / 100
    return math.ceil(fraction) if round_up else math.floor(fraction)


def resolve_fenceposts(
    max_surge: int | str, max_unavailable: int | str, desired: int
) -> tuple[int, int]:
    """(surge, unavailable); both 0 would never progress, so unavailability becomes 1."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(strategy: RolloutStrategy, desired: int) -> int:
    if strategy.type != ROLLING_UPDATE:
        return 0
    return resolve_fenceposts(strategy.max_surge, strategy.max_unavailable, desired)[0]


def max_unavailable(strategy: RolloutStrategy, desired: int) -> int:
    if strategy.type != ROLLING_UPDATE or desired == 0:
        return 0
    unavailable = resolve_fenceposts(strategy.max_surge, strategy.max_unavailable, desired)[1]
    return min(unavailable, desired)


def total_replicas(sets: list[ReplicaSetState]) -> int:
    return sum(rs.replicas for rs in sets)


def new_replicas(
    strategy: RolloutStrategy, desired: int, all_sets: list[ReplicaSetState], new: ReplicaSetState
) -> int:
    """The size the new ReplicaSet may grow to now (NewRSNewReplicas)."""
    if strategy.type == RECREATE:
        return desired
    ceiling = desired + max_surge(strategy, desired)
    current = total_replicas(all_sets)
    if current >= ceiling:
        return new.replicas
    return new.replicas + min(ceiling - current, desired - new.replicas)


def by_age(sets: list[ReplicaSetState]) -> list[ReplicaSetState]:
    """Oldest first, names breaking ties (ReplicaSetsByCreationTimestamp)."""
    return sorted(sets, key=lambda rs: (rs.created, rs.name))


# --------------------------------------------------------------------------- rollouts


def rolling_update_step(
    strategy: RolloutStrategy,
    desired: int,
    new: ReplicaSetState,
    olds: list[ReplicaSetState],
) -> list[Scale]:
    """reconcileNewReplicaSet, and when it scales nothing, reconcileOldReplicaSets."""
    all_sets = [*olds, new]
    if new.replicas > desired:
        return [Scale(new.name, desired)]
    if new.replicas < desired:
        size = new_replicas(strategy, desired, all_sets, new)
        if size != new.replicas:
            return [Scale(new.name, size)]
    active_olds = by_age([rs for rs in olds if rs.replicas > 0])
    if not active_olds:
        return []
    min_available = desired - max_unavailable(strategy, desired)
    new_unavailable = new.replicas - new.available
    max_scaled_down = total_replicas(all_sets) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    sizes = {rs.name: rs.replicas for rs in active_olds}
    # Unavailable old pods go first: deleting them costs no availability.
    cleaned = 0
    for rs in active_olds:
        if cleaned >= max_scaled_down:
            break
        unhealthy = max(0, rs.replicas - rs.available)
        if unhealthy == 0:
            continue
        down = min(max_scaled_down - cleaned, unhealthy)
        sizes[rs.name] -= down
        cleaned += down
    # Then as many available ones as maxUnavailable allows.
    available = sum(rs.available for rs in all_sets)
    allowed = available - min_available
    scaled = 0
    for rs in active_olds:
        if scaled >= allowed:
            break
        if sizes[rs.name] == 0:
            continue
        down = min(sizes[rs.name], allowed - scaled)
        sizes[rs.name] -= down
        scaled += down
    return [Scale(rs.name, sizes[rs.name]) for rs in active_olds if sizes[rs.name] != rs.replicas]


def recreate_step(
    desired: int, new: ReplicaSetState | None, olds: list[ReplicaSetState], old_pods_running: bool
) -> RolloutStep:
    downs = tuple(Scale(rs.name, 0) for rs in olds if rs.replicas > 0)
    if downs:
        return RolloutStep(downs)
    if old_pods_running:
        return RolloutStep()  # the new pods must not meet the old ones
    if new is None:
        return RolloutStep(create_new=True)
    if new.replicas != desired:
        return RolloutStep((Scale(new.name, desired),))
    return RolloutStep()


def rollout_step(
    strategy: RolloutStrategy,
    desired: int,
    new: ReplicaSetState | None,
    olds: list[ReplicaSetState],
    old_pods_running: bool = False,
) -> RolloutStep:
    """What one pass of the rollout does (`old_pods_running` matters to Recreate only)."""
    if strategy.type == RECREATE:
        return recreate_step(desired, new, olds, old_pods_running)
    if new is None:
        return RolloutStep(create_new=True)
    return RolloutStep(tuple(rolling_update_step(strategy, desired, new, olds)))


# --------------------------------------------------------------------------- scaling events


def is_scaling_event(desired: int, sets: list[ReplicaSetState]) -> bool:
    """spec.replicas differs from what an active ReplicaSet was sized for."""
    return any(
        rs.desired_annotation is not None and rs.desired_annotation != desired
        for rs in sets
        if rs.replicas > 0
    )


def active_or_latest(
    new: ReplicaSetState | None, olds: list[ReplicaSetState]
) -> ReplicaSetState | None:
    """The only active ReplicaSet, or the newest when none is; None when several are."""
    newest_first = sorted(olds, key=lambda rs: (rs.created, rs.name), reverse=True)
    candidates = [*newest_first, *([new] if new is not None else [])]
    active = [rs for rs in candidates if rs.replicas > 0]
    if len(active) == 1:
        return active[0]
    if active:
        return None
    return new if new is not None else (newest_first[0] if newest_first else None)


def _fraction(
    rs: ReplicaSetState, strategy: RolloutStrategy, desired: int, status_replicas: int
) -> int:
    """How many replicas `rs` gains (or loses) when the deployment is resized."""
    if desired == 0:
        return -rs.replicas
    ceiling = desired + max_surge(strategy, desired)
    before = rs.max_replicas_annotation or status_replicas
    if before == 0:
        return 0
    scaled = rs.replicas * ceiling / before
    return int(scaled + 0.5) - rs.replicas  # Go's integer.RoundToInt32


def proportional_scale(
    strategy: RolloutStrategy,
    desired: int,
    new: ReplicaSetState | None,
    olds: list[ReplicaSetState],
    status_replicas: int,
) -> list[Scale]:
    """The sizes after a scaling event (DeploymentController.scale)."""
    target = active_or_latest(new, olds)
    if target is not None:
        return [] if target.replicas == desired else [Scale(target.name, desired)]
    if new is not None and new.replicas == desired and new.desired_annotation == desired:
        return [Scale(rs.name, 0) for rs in olds if rs.replicas > 0]  # new one saturated
    if strategy.type != ROLLING_UPDATE:
        return []
    active = [rs for rs in [*olds, *([new] if new else [])] if rs.replicas > 0]
    allowed = desired + max_surge(strategy, desired) if desired > 0 else 0
    to_add = allowed - total_replicas(active)
    if to_add > 0:  # the largest first; newer first among equals
        active.sort(key=lambda rs: rs.name, reverse=True)
        active.sort(key=lambda rs: (-rs.replicas, -rs.created))
    elif to_add < 0:  # the largest first; older first among equals
        active.sort(key=lambda rs: (-rs.replicas, rs.created, rs.name))
    sizes: dict[str, int] = {}
    added = 0
    for rs in active:
        share = 0
        if to_add != 0 and to_add != added:
            fraction = _fraction(rs, strategy, desired, status_replicas)
            left = to_add - added
            share = min(fraction, left) if to_add > 0 else max(fraction, left)
        sizes[rs.name] = rs.replicas + share
        added += share
    if active and to_add != 0:  # leftovers go to the largest
        first = active[0].name
        sizes[first] = max(0, sizes[first] + to_add - added)
    return [Scale(rs.name, sizes[rs.name]) for rs in active]


# --------------------------------------------------------------------------- history


def history_to_delete(olds: list[ReplicaSetState], limit: int) -> list[str]:
    """Old ReplicaSets past revisionHistoryLimit that may go (cleanupDeployment)."""
    alive = [rs for rs in olds if not rs.deleting]
    excess = len(alive) - limit
    if excess <= 0:
        return []
    by_revision = sorted(alive, key=lambda rs: (rs.revision, rs.created, rs.name))
    return [
        rs.name
        for rs in by_revision[:excess]
        if rs.current == 0 and rs.replicas == 0 and rs.generation <= rs.observed_generation
    ]
