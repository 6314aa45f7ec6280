"""Leader election over a coordination.k8s.io/v1 Lease: the decisions, as pure functions.

The contract is client-go's `leaderelection` package, so that an ElasticLM operator
behaves like every other controller on the cluster and `kubectl get lease` reads the
same way:

- The Lease's spec is the record: `holderIdentity` (empty once released),
  `leaseDurationSeconds`, `acquireTime`, `renewTime`, `leaseTransitions`.
- A candidate judges expiry by its **own** clock: a record counts as expired once it
  has not changed for `leaseDurationSeconds` since this candidate first saw it
  (`Observation.observed_at`, a monotonic time). The times written in the record are
  for people; comparing them with the local wall clock would let clock skew between
  nodes elect two leaders.
- Every write carries the resourceVersion that was read, so of two candidates racing
  for an expired lease only one write succeeds (the other gets 409 Conflict).
- The leader renews every `retry_period`; when it has not renewed for `renew_deadline`
  it must stop acting at once. Because `renew_deadline < lease_duration`, it has
  stopped before any other candidate may take over.

Times are arguments: `now` is a monotonic reading in seconds, `wall` a UTC datetime
for the record's timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from lmoperator.api import kinds

#: client-go's JitterFactor: the renew deadline must leave room for more than one retry.
JITTER_FACTOR = 1.2
DEFAULT_LEASE_DURATION = 15
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
#: What a released lease says about its duration (client-go writes 1 s as well).
RELEASED_LEASE_DURATION = 1


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts, how long the leader may fail to renew, how often to try.

    Defaults are client-go's (and kube-controller-manager's): 15 s, 10 s, 2 s.
    """

    lease_duration: int = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def problems(self) -> list[str]:
        """What is wrong with these timings, with the flag to change (empty when valid)."""
        found = []
        if self.lease_duration < 1:
            found.append(
                f"--leader-election-lease-duration ({self.lease_duration}) must be at least 1 s"
            )
        if self.retry_period <= 0:
            found.append(f"--leader-election-retry-period ({self.retry_period:g}) must be > 0")
        if self.renew_deadline >= self.lease_duration:
            found.append(
                f"--leader-election-renew-deadline ({self.renew_deadline:g}) must be shorter "
                f"than --leader-election-lease-duration ({self.lease_duration}): the leader "
                "has to stop acting before another replica may take over"
            )
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            found.append(
                f"--leader-election-renew-deadline ({self.renew_deadline:g}) must be longer "
                f"than {JITTER_FACTOR:g} x --leader-election-retry-period "
                f"({self.retry_period:g}), so that a failed renewal can be retried"
            )
        return found


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease: who holds it, for how long, since when."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @property
    def released(self) -> bool:
        return not self.holder


@dataclass(frozen=True)
class ObservedLease:
    """A Lease as read from the API: its record and the resourceVersion to write against."""

    record: LeaseRecord
    resource_version: str
    uid: str = ""


@dataclass(frozen=True)
class Observation:
    """A record and the local monotonic time at which this candidate first saw it."""

    record: LeaseRecord
    observed_at: float


def micro_time(wall: datetime) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with microseconds."""
    return wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_lease(obj: Mapping[str, Any]) -> ObservedLease:
    """The record of a Lease object (fields a Lease may lack read as empty or zero)."""
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    holder = spec.get("holderIdentity")
    record = LeaseRecord(
        holder=holder if isinstance(holder, str) else "",
        lease_duration_seconds=_int(spec.get("leaseDurationSeconds"), 0),
        acquire_time=spec.get("acquireTime") or None,
        renew_time=spec.get("renewTime") or None,
        transitions=_int(spec.get("leaseTransitions"), 0),
    )
    return ObservedLease(record, str(meta.get("resourceVersion") or ""), str(meta.get("uid") or ""))


def lease_manifest(
    name: str, namespace: str, record: LeaseRecord, resource_version: str = ""
) -> dict[str, Any]:
    """The Lease object that writes `record` (a create without a resourceVersion, an
    update with the one that was read)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.lease_duration_seconds,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    if record.renew_time:
        spec["renewTime"] = record.renew_time
    return {
        "apiVersion": kinds.LEASE.api_version,
        "kind": kinds.LEASE.kind,
        "metadata": metadata,
        "spec": spec,
    }


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """Remember when the record last changed: an unchanged record keeps its first sighting,
    so its expiry counts from then."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def expires_at(observation: Observation) -> float:
    """When (monotonic) the observed record expires unless it changes first."""
    return observation.observed_at + observation.record.lease_duration_seconds


def is_expired(observation: Observation, now: float) -> bool:
    """True once the record has stood unchanged for its whole lease duration (the
    boundary itself counts as expired, as in client-go)."""
    return now >= expires_at(observation)


@dataclass(frozen=True)
class Create:
    """No Lease exists: create one that names this candidate."""

    record: LeaseRecord


@dataclass(frozen=True)
class Update:
    """Write `record` against the resourceVersion read: a renewal, or a takeover of a
    released or expired lease (`takeover` True)."""

    record: LeaseRecord
    takeover: bool


@dataclass(frozen=True)
class Wait:
    """Another candidate holds a valid lease: try again later."""

    holder: str
    expires_at: float


Decision = Create | Update | Wait


def decide(
    observation: Observation | None,
    identity: str,
    timings: LeaseTimings,
    now: float,
    wall: datetime,
) -> Decision:
    """What `identity` does about the lease it observed (None: there is no Lease).

    The record written on a takeover starts a new term (acquireTime now, one more
    transition); a renewal keeps the term and moves renewTime only.
    """
    stamp = micro_time(wall)
    if observation is None:
        return Create(LeaseRecord(identity, timings.lease_duration, stamp, stamp, 0))
    current = observation.record
    if current.holder == identity:
        renewed = replace(current, lease_duration_seconds=timings.lease_duration, renew_time=stamp)
        return Update(renewed, takeover=False)
    if not current.released and not is_expired(observation, now):
        return Wait(current.holder, expires_at(observation))
    return Update(
        LeaseRecord(identity, timings.lease_duration, stamp, stamp, current.transitions + 1),
        takeover=True,
    )


def released_record(current: LeaseRecord, wall: datetime) -> LeaseRecord:
    """What the leader writes on a graceful stop: no holder, so that a standby takes over
    on its next try instead of waiting for the lease to expire."""
    stamp = micro_time(wall)
    return LeaseRecord("", RELEASED_LEASE_DURATION, stamp, stamp, current.transitions)


def renew_due(last_renewed: float, timings: LeaseTimings, now: float) -> bool:
    """Whether the leader should renew now (every retry period)."""
    return now >= last_renewed + timings.retry_period


def must_stop_leading(last_renewed: float, timings: LeaseTimings, now: float) -> bool:
    """True once the renew deadline has passed since the last successful renewal.

    `last_renewed` is when that renewal's request was *sent*: the API server stored it
    no earlier, so no other candidate's lease-duration clock can have started before
    it, and stopping at `last_renewed + renew_deadline` stays inside the lease.
    """
    return now - last_renewed >= timings.renew_deadline
