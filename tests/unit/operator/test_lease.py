"""Leader election's decisions (lmoperator.reconcile.lease), with hand-computed times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lmoperator.reconcile.lease import (
    Create,
    LeaseRecord,
    LeaseTimings,
    Observation,
    Update,
    Wait,
    decide,
    is_expired,
    lease_manifest,
    micro_time,
    must_stop_leading,
    observe,
    parse_lease,
    released_record,
    renew_due,
)

T = LeaseTimings()  # 15 s, 10 s, 2 s
WALL = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
STAMP = "2026-12-04T12:00:00.123456Z"
OLD = "2026-12-04T11:00:00.000000Z"


def held(holder: str, transitions: int = 0, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, OLD, OLD, transitions)


def test_defaults_are_client_gos() -> None:
    assert (T.lease_duration, T.renew_deadline, T.retry_period) == (15, 10.0, 2.0)
    assert T.problems() == []


@pytest.mark.parametrize(
    ("timings", "flag"),
    [
        (LeaseTimings(10, 10, 2), "--leader-election-renew-deadline (10) must be shorter"),
        (LeaseTimings(15, 12, 10), "must be longer than 1.2 x --leader-election-retry-period"),
        # 2.4 = 1.2 x 2 exactly: client-go refuses the boundary too.
        (LeaseTimings(15, 2.4, 2), "must be longer than 1.2 x"),
        (LeaseTimings(0, 0.5, 0.1), "--leader-election-lease-duration (0) must be at least 1"),
        (LeaseTimings(15, 10, 0), "--leader-election-retry-period (0) must be > 0"),
    ],
)
def test_bad_timings_name_the_flag_to_change(timings: LeaseTimings, flag: str) -> None:
    assert any(flag in problem for problem in timings.problems()), timings.problems()


def test_micro_time_is_rfc3339_utc_with_microseconds() -> None:
    assert micro_time(WALL) == STAMP


def test_no_lease_creates_one_naming_this_candidate() -> None:
    assert decide(None, "a", T, now=100.0, wall=WALL) == Create(
        LeaseRecord("a", 15, STAMP, STAMP, 0)
    )


def test_a_valid_lease_of_another_holder_means_wait_until_it_expires() -> None:
    seen = Observation(held("b"), observed_at=100.0)
    assert decide(seen, "a", T, now=114.999, wall=WALL) == Wait("b", expires_at=115.0)


def test_expiry_counts_from_when_this_candidate_saw_the_record_not_from_renew_time() -> None:
    # The record's renewTime is an hour old by the wall clock: a skewed clock. What
    # counts is that this candidate saw it change at t=100 (monotonic).
    seen = Observation(held("b"), observed_at=100.0)
    assert isinstance(decide(seen, "a", T, now=101.0, wall=WALL), Wait)


def test_expiry_boundary_counts_as_expired() -> None:
    seen = Observation(held("b"), observed_at=100.0)
    assert not is_expired(seen, 114.999999)
    assert is_expired(seen, 115.0)


def test_the_lease_duration_of_the_record_counts_not_the_candidates_own() -> None:
    # The holder runs with 30 s; this candidate with 15 s must still wait 30 s.
    seen = Observation(held("b", duration=30), observed_at=100.0)
    assert isinstance(decide(seen, "a", T, now=120.0, wall=WALL), Wait)
    assert isinstance(decide(seen, "a", T, now=130.0, wall=WALL), Update)


def test_an_expired_lease_is_taken_over_as_a_new_term() -> None:
    seen = Observation(held("b", transitions=4), observed_at=100.0)
    decision = decide(seen, "a", T, now=115.0, wall=WALL)
    assert decision == Update(LeaseRecord("a", 15, STAMP, STAMP, 5), takeover=True)


def test_a_released_lease_is_taken_at_once() -> None:
    released = LeaseRecord("", 1, OLD, OLD, 4)
    seen = Observation(released, observed_at=100.0)
    decision = decide(seen, "a", T, now=100.0, wall=WALL)
    assert decision == Update(LeaseRecord("a", 15, STAMP, STAMP, 5), takeover=True)


def test_the_holder_renews_keeping_its_term() -> None:
    seen = Observation(held("a", transitions=2), observed_at=100.0)
    # Even past expiry by its own observation: a holder's renewal is always allowed
    # (the API server's resourceVersion check decides whether it still holds it).
    decision = decide(seen, "a", T, now=200.0, wall=WALL)
    assert decision == Update(LeaseRecord("a", 15, OLD, STAMP, 2), takeover=False)


def test_renewal_writes_the_current_lease_duration() -> None:
    seen = Observation(held("a", duration=30), observed_at=100.0)
    decision = decide(seen, "a", T, now=101.0, wall=WALL)
    assert isinstance(decision, Update)
    assert decision.record.lease_duration_seconds == 15


def test_observe_keeps_the_first_sighting_of_an_unchanged_record() -> None:
    first = observe(None, held("b"), 100.0)
    assert observe(first, held("b"), 110.0) is first
    # A renewal changes renewTime: the clock starts again.
    renewed = LeaseRecord("b", 15, OLD, STAMP, 0)
    assert observe(first, renewed, 110.0) == Observation(renewed, 110.0)


def test_a_holder_that_stops_renewing_is_replaced_after_exactly_the_lease_duration() -> None:
    observation = observe(None, held("b"), 100.0)
    for now in (102.0, 104.0, 114.0):  # polls of an unchanged record
        observation = observe(observation, held("b"), now)
        assert isinstance(decide(observation, "a", T, now, WALL), Wait)
    observation = observe(observation, held("b"), 116.0)
    assert isinstance(decide(observation, "a", T, 116.0, WALL), Update)


def test_release_empties_the_holder_and_keeps_the_transitions() -> None:
    assert released_record(held("a", transitions=3), WALL) == LeaseRecord("", 1, STAMP, STAMP, 3)


def test_renew_due_every_retry_period() -> None:
    assert not renew_due(100.0, T, 101.999)
    assert renew_due(100.0, T, 102.0)


def test_must_stop_leading_at_the_renew_deadline() -> None:
    assert not must_stop_leading(100.0, T, 109.999)
    assert must_stop_leading(100.0, T, 110.0)
    # ...which comes before any other candidate may take over (15 s).
    seen_by_standby = Observation(held("a"), observed_at=100.0)
    assert not is_expired(seen_by_standby, 110.0)


def test_parse_and_manifest_round_trip() -> None:
    record = LeaseRecord("a", 15, STAMP, STAMP, 7)
    manifest = lease_manifest("elasticlm-operator", "ops", record, resource_version="42")
    assert manifest == {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "elasticlm-operator", "namespace": "ops", "resourceVersion": "42"},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 7,
            "acquireTime": STAMP,
            "renewTime": STAMP,
        },
    }
    manifest["metadata"]["uid"] = "u1"
    observed = parse_lease(manifest)
    assert (observed.record, observed.resource_version, observed.uid) == (record, "42", "u1")


def test_a_create_carries_no_resource_version() -> None:
    manifest = lease_manifest("l", "ns", LeaseRecord("a", 15, STAMP, STAMP, 0))
    assert "resourceVersion" not in manifest["metadata"]


def test_an_empty_lease_reads_as_released() -> None:
    observed = parse_lease({"metadata": {"resourceVersion": "3"}, "spec": {}})
    assert observed.record == LeaseRecord("", 0, None, None, 0)
    assert observed.record.released
    # ...and can be taken at once.
    seen = Observation(observed.record, observed_at=100.0)
    assert isinstance(decide(seen, "a", T, 100.0, WALL), Update)
