"""The Deployment controller's arithmetic: maxSurge/maxUnavailable, rollout steps,
proportional scaling and revision history (pkg/controller/deployment semantics)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devcluster.workloads.rollout import (
    ReplicaSetState,
    RolloutStep,
    RolloutStrategy,
    Scale,
    history_to_delete,
    is_scaling_event,
    max_surge,
    max_unavailable,
    new_replicas,
    proportional_scale,
    resolve_fenceposts,
    rollout_step,
    scaled_value,
)

RECREATE = RolloutStrategy("Recreate")


def rolling(surge: int | str, unavailable: int | str) -> RolloutStrategy:
    return RolloutStrategy("RollingUpdate", surge, unavailable)


def rs(name: str, replicas: int, available: int | None = None, **fields: Any) -> ReplicaSetState:
    available = replicas if available is None else available
    return dataclasses.replace(
        ReplicaSetState(name, replicas, current=replicas, ready=available, available=available),
        **fields,
    )


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("value", "total", "up", "expected"),
    [
        (3, 10, True, 3),
        ("25%", 10, True, 3),  # 2.5 rounds up for surge
        ("25%", 10, False, 2),  # and down for unavailability
        ("25%", 1, True, 1),
        ("25%", 1, False, 0),
        ("0%", 7, True, 0),
        ("100%", 7, False, 7),
        ("33%", 3, True, 1),
    ],
)
def test_scaled_value_rounds_as_upstream(
    value: int | str, total: int, up: bool, expected: int
) -> None:
    assert scaled_value(value, total, up) == expected


def test_fenceposts_never_both_zero() -> None:
    assert resolve_fenceposts("25%", "25%", 1) == (1, 0)
    assert resolve_fenceposts("0%", "1%", 2) == (0, 1)  # 0.02 rounds to 0: bumped to 1
    assert resolve_fenceposts(0, 0, 5) == (0, 1)
    assert resolve_fenceposts(2, "50%", 5) == (2, 2)


def test_surge_and_unavailability_of_a_deployment() -> None:
    assert max_surge(rolling("25%", "25%"), 4) == 1
    assert max_unavailable(rolling("25%", "25%"), 4) == 1
    assert max_unavailable(rolling(1, 5), 3) == 3  # never more than the replicas
    assert max_unavailable(rolling(1, 1), 0) == 0
    assert max_surge(RECREATE, 4) == 0
    assert max_unavailable(RECREATE, 4) == 0


def test_new_replica_set_grows_within_the_surge() -> None:
    strategy = rolling(2, 0)
    new = rs("new", 0)
    assert new_replicas(strategy, 4, [rs("old", 4), new], new) == 2
    assert new_replicas(strategy, 4, [rs("old", 2), rs("new", 3)], rs("new", 3)) == 4
    assert new_replicas(strategy, 4, [rs("old", 4), rs("new", 2)], rs("new", 2)) == 2
    assert new_replicas(RECREATE, 4, [new], new) == 4


# --------------------------------------------------------------------------- rolling update


def test_rolling_update_scales_up_first_then_down() -> None:
    strategy = rolling(1, 0)
    assert rollout_step(strategy, 3, None, [rs("old", 3)]) == RolloutStep(create_new=True)
    up = rollout_step(strategy, 3, rs("new", 0), [rs("old", 3)])
    assert up.scales == (Scale("new", 1),)
    # the new pod is not available yet: nothing may go
    assert rollout_step(strategy, 3, rs("new", 1, 0), [rs("old", 3)]).scales == ()
    down = rollout_step(strategy, 3, rs("new", 1), [rs("old", 3)])
    assert down.scales == (Scale("old", 2),)


def test_unavailable_old_pods_are_removed_first() -> None:
    # 10 replicas, maxUnavailable 2, maxSurge 3; the new ReplicaSet crash-loops.
    strategy = rolling(3, 2)
    olds = [rs("old", 8, 7)]  # one old pod lost availability
    new = rs("new", 5, 0)
    # all 13 - min available 8 - new unavailable 5 = 0: nothing may go
    assert rollout_step(strategy, 10, new, olds).scales == ()
    # a roll-over to a third template: old ones carry unhealthy pods
    olds = [rs("oldest", 4, 2, created=1.0), rs("old", 5, 5, created=2.0)]
    new = rs("new", 0)
    step = rollout_step(strategy, 10, new, olds)
    assert step.scales == (Scale("new", 4),)  # 9 old pods + 4 = 10 + maxSurge 3
    step = rollout_step(strategy, 10, rs("new", 4, 0), olds)
    # 13 pods - 8 to keep available - 4 new unavailable = 1 may go: an unhealthy one of
    # the oldest ReplicaSet, since 7 available pods leave none to spare
    assert step.scales == (Scale("oldest", 3),)


@given(
    desired=st.integers(1, 12),
    surge=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"])),
    unavailable=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%"])),
)
def test_a_rolling_update_completes_within_its_bounds(
    desired: int, surge: int | str, unavailable: int | str
) -> None:
    """From a fully available old ReplicaSet, every step keeps the pods within
    desired + maxSurge and the available ones at or above desired - maxUnavailable."""
    strategy = rolling(surge, unavailable)
    ceiling = desired + max_surge(strategy, desired)
    floor = desired - max_unavailable(strategy, desired)
    olds = [rs("old", desired)]
    new: ReplicaSetState | None = None
    for _ in range(10 * desired + 10):
        step = rollout_step(strategy, desired, new, olds)
        if step.create_new:
            empty = rs("new", 0)
            new = rs("new", new_replicas(strategy, desired, [*olds, empty], empty), 0)
            continue
        assert new is not None
        if not step.scales:
            if new.available < new.replicas:  # the cluster catches up: pods become available
                new = dataclasses.replace(new, available=new.replicas, ready=new.replicas)
                continue
            break
        sizes = {s.name: s.replicas for s in step.scales}
        new = dataclasses.replace(new, replicas=sizes.get("new", new.replicas))
        olds = [
            rs(
                o.name,
                sizes.get(o.name, o.replicas),
                min(o.available, sizes.get(o.name, o.replicas)),
            )
            for o in olds
        ]
        all_sets = [*olds, new]
        assert sum(s.replicas for s in all_sets) <= ceiling
        assert sum(s.available for s in all_sets) >= min(floor, desired)
    assert new is not None
    assert new.replicas == desired
    assert new.available == desired
    assert all(o.replicas == 0 for o in olds)


# --------------------------------------------------------------------------- recreate


def test_recreate_waits_for_old_pods_to_go() -> None:
    olds = [rs("old", 3)]
    assert rollout_step(RECREATE, 3, None, olds).scales == (Scale("old", 0),)
    gone = [rs("old", 0, current=0)]
    assert rollout_step(RECREATE, 3, None, gone, old_pods_running=True) == RolloutStep()
    assert rollout_step(RECREATE, 3, None, gone, old_pods_running=False).create_new
    assert rollout_step(RECREATE, 3, rs("new", 1), gone).scales == (Scale("new", 3),)
    assert rollout_step(RECREATE, 3, rs("new", 3), gone) == RolloutStep()


# --------------------------------------------------------------------------- scaling events


def test_scaling_event_is_told_by_the_desired_replicas_annotation() -> None:
    sized_for_3 = rs("a", 3, desired_annotation=3)
    assert not is_scaling_event(3, [sized_for_3])
    assert is_scaling_event(5, [sized_for_3])
    assert not is_scaling_event(5, [rs("a", 0, desired_annotation=3)])  # inactive


def test_a_single_active_replica_set_takes_the_new_size() -> None:
    new = rs("new", 3, created=2.0)
    assert proportional_scale(rolling(1, 0), 5, new, [rs("old", 0, created=1.0)], 3) == [
        Scale("new", 5)
    ]
    # none active: the newest grows
    assert proportional_scale(
        rolling(1, 0), 2, None, [rs("a", 0, created=1.0), rs("b", 0, created=2.0)], 0
    ) == [Scale("b", 2)]


def test_a_scaling_event_mid_rollout_is_spread_proportionally() -> None:
    """Upstream's example: 10 replicas, maxSurge 3, mid-rollout at 8 old + 5 new, scaled
    to 15: the 5 more (ceiling 15 + 4 = 19, 6 to add) go 8:5 between them."""
    strategy = rolling(3, 2)
    old = rs("old", 8, created=1.0, max_replicas_annotation=13)
    new = rs("new", 5, created=2.0, max_replicas_annotation=13)
    scales = proportional_scale(strategy, 15, new, [old], 13)
    sizes = {s.name: s.replicas for s in scales}
    assert sum(sizes.values()) == 15 + max_surge(strategy, 15)
    assert sizes["old"] > 8
    assert sizes["new"] > 5
    assert sizes["old"] - 8 >= sizes["new"] - 5  # the larger one gets the larger share
    # and back down to 5: everything shrinks, nothing goes negative
    down = {s.name: s.replicas for s in proportional_scale(strategy, 5, new, [old], 13)}
    assert sum(down.values()) == 5 + max_surge(strategy, 5)
    assert all(v >= 0 for v in down.values())


def test_scaling_to_zero_empties_every_replica_set() -> None:
    strategy = rolling(1, 1)
    scales = proportional_scale(
        strategy, 0, rs("new", 2, created=2.0), [rs("old", 3, created=1.0)], 5
    )
    assert {s.name: s.replicas for s in scales} == {"old": 0, "new": 0}


# --------------------------------------------------------------------------- history


def test_history_keeps_the_newest_revisions_scaled_to_zero() -> None:
    olds = [
        rs("r1", 0, revision=1),
        rs("r2", 0, revision=2),
        rs("r3", 1, revision=3),  # still has pods: kept
        rs("r4", 0, revision=4),
        rs("r5", 0, revision=5, generation=3, observed_generation=2),  # not settled
    ]
    assert history_to_delete(olds, 10) == []
    assert history_to_delete(olds, 2) == ["r1", "r2"]
    assert history_to_delete(olds, 0) == ["r1", "r2", "r4"]
    deleting = [dataclasses.replace(olds[0], deleting=True), *olds[1:]]
    assert history_to_delete(deleting, 2) == ["r2"]
