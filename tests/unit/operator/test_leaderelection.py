"""The leader elector (lmoperator.leaderelection) against an in-memory Lease API.

Times are a fake monotonic clock, except for the renewal loop, whose deadline is real
time by design (it must hold even when a request hangs); those tests use timings of a
fraction of a second.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lmoperator import health
from lmoperator.api import kinds
from lmoperator.kube import KubeError
from lmoperator.leaderelection import (
    LeaderElectionConfig,
    LeaderElectionError,
    LeaderElector,
    default_identity,
    default_namespace,
)
from lmoperator.reconcile.lease import LeaseTimings

NS, NAME = "ops", "elasticlm-operator"
WALL = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def leader_gauge() -> float | None:
    return REGISTRY.get_sample_value("elasticlm_leader")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """Leases with resourceVersion checks (409 on a stale update or an existing name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.events: list[tuple[str, str, str]] = []
        self.fail: KubeError | None = None
        self.hang = threading.Event()  # set: every request blocks until `unhang`
        self.unhang = threading.Event()
        self.before_write: Callable[[], object] | None = None
        self.writes = 0

    def _enter(self) -> None:
        if self.hang.is_set():
            self.unhang.wait(10)
        if self.fail is not None:
            raise self.fail

    def _store(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(dict(manifest))
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        uid = self.objects.get(key, {}).get("metadata", {}).get("uid", f"uid-{self.version}")
        obj["metadata"].update(resourceVersion=str(self.version), uid=uid)
        self.objects[key] = obj
        self.writes += 1
        return copy.deepcopy(obj)

    def _hook(self) -> None:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()

    def get(
        self, kind: kinds.ResourceKind, namespace: str, name: str, timeout: float = 15
    ) -> dict[str, Any] | None:
        assert kind == kinds.LEASE
        self._enter()
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def create(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        manifest: Mapping[str, Any],
        timeout: float = 15,
    ) -> dict[str, Any] | None:
        self._enter()
        self._hook()
        if (namespace, manifest["metadata"]["name"]) in self.objects:
            return None
        assert "resourceVersion" not in manifest["metadata"]
        return self._store(manifest)

    def replace(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        manifest: Mapping[str, Any],
        timeout: float = 15,
    ) -> dict[str, Any] | None:
        self._enter()
        self._hook()
        current = self.objects[(namespace, manifest["metadata"]["name"])]
        if manifest["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return None
        return self._store(manifest)

    def create_event(
        self, involved: Mapping[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        assert (involved["kind"], involved["name"], involved["uid"]) == (
            "Lease",
            NAME,
            self.objects[(NS, NAME)]["metadata"]["uid"],
        )
        self.events.append((reason, message, type_))

    def spec(self) -> dict[str, Any]:
        return dict(self.objects[(NS, NAME)]["spec"])


def elector(
    api: FakeLeases, identity: str, clock: Callable[[], float], timings: LeaseTimings | None = None
) -> LeaderElector:
    config = LeaderElectionConfig(NS, NAME, identity, timings or LeaseTimings())
    return LeaderElector(api, config, clock=clock, wall=lambda: WALL)


@pytest.fixture
def api() -> FakeLeases:
    return FakeLeases()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_first_candidate_creates_the_lease_and_the_second_waits(
    api: FakeLeases, clock: Clock
) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert a.leading
    assert leader_gauge() == 1
    assert not b.try_acquire_or_renew()
    assert not b.leading
    spec = api.spec()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (
        "a",
        15,
        0,
    )
    assert spec["acquireTime"] == spec["renewTime"] == "2026-12-04T12:00:00.000000Z"


def test_the_leader_renews_with_one_request_and_keeps_its_term(
    api: FakeLeases, clock: Clock
) -> None:
    a = elector(api, "a", clock)
    assert a.try_acquire_or_renew()
    acquired = api.spec()["acquireTime"]
    writes = api.writes
    clock.now += 2
    assert a.try_acquire_or_renew()
    assert api.writes == writes + 1
    assert a.last_renewed == clock.now
    assert api.spec()["acquireTime"] == acquired
    assert api.spec()["leaseTransitions"] == 0


def test_a_standby_takes_over_exactly_one_lease_duration_after_the_last_change_it_saw(
    api: FakeLeases, clock: Clock
) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b sees the record at t=1000
    # a dies. b polls every retry period; the record does not change any more.
    clock.now += 14.999
    assert not b.try_acquire_or_renew()
    clock.now = 1015.0
    assert b.try_acquire_or_renew()
    assert (api.spec()["holderIdentity"], api.spec()["leaseTransitions"]) == ("b", 1)
    # The old leader, if it comes back, finds out that it lost.
    assert not a.try_acquire_or_renew()
    assert a.lost_to == "b"
    assert "holder=b" in a.why_lost()


def test_renewals_seen_by_a_standby_restart_its_count(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b sees the record at t=1000
    clock.now += 10
    a.wall = lambda: datetime(2026, 12, 4, 12, 0, 10, tzinfo=UTC)
    assert a.try_acquire_or_renew()  # renewTime moves to 12:00:10
    assert not b.try_acquire_or_renew()  # b sees the change at t=1010
    clock.now = 1024.9
    assert not b.try_acquire_or_renew()
    clock.now = 1025.0
    assert b.try_acquire_or_renew()


def test_of_two_candidates_racing_for_an_expired_lease_only_one_wins(
    api: FakeLeases, clock: Clock
) -> None:
    a, b, c = (elector(api, name, clock) for name in "abc")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert not c.try_acquire_or_renew()
    clock.now += 15
    # c reads the expired lease, and b writes its takeover before c writes its own.
    api.before_write = b.try_acquire_or_renew
    assert not c.try_acquire_or_renew()
    assert b.leading
    assert not c.leading
    assert (api.spec()["holderIdentity"], api.spec()["leaseTransitions"]) == ("b", 1)


def test_two_candidates_creating_the_lease_at_once(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    api.before_write = b.try_acquire_or_renew
    assert not a.try_acquire_or_renew()  # its create found b's lease: 409
    assert b.leading
    assert api.spec()["holderIdentity"] == "b"


def test_release_lets_a_standby_take_over_at_once(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert not a.leading
    assert leader_gauge() == 0
    assert (api.spec()["holderIdentity"], api.spec()["leaseDurationSeconds"]) == ("", 1)
    assert b.try_acquire_or_renew()  # same instant: no wait for expiry
    assert (api.spec()["holderIdentity"], api.spec()["leaseTransitions"]) == ("b", 1)
    assert ("LeaderElection", "a stopped leading", "Normal") in api.events


def test_release_writes_nothing_without_leading_or_after_losing(
    api: FakeLeases, clock: Clock
) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert not b.release()  # never led
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 15
    assert b.try_acquire_or_renew()
    assert not a.release()  # its resourceVersion is stale: b's lease stays
    assert api.spec()["holderIdentity"] == "b"


def test_api_errors_are_failed_attempts_not_crashes(api: FakeLeases, clock: Clock) -> None:
    a = elector(api, "a", clock)
    api.fail = KubeError("get leases/elasticlm-operator", 0, "ConnectionRefusedError")
    assert not a.try_acquire_or_renew()
    assert a.ready() == (False, f"no answer yet about lease {NS}/{NAME}")
    api.fail = None
    assert a.try_acquire_or_renew()
    assert a.ready() == (True, "leader")


def test_health_of_a_standby_and_of_a_leader(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert b.health()[0]
    assert b.ready() == (True, "standby")
    # A standby whose loop stopped trying is not healthy (it could never take over).
    clock.now += 25.001  # lease duration + renew deadline
    assert b.health() == (False, f"standby: no try for lease {NS}/{NAME} for 25.0s")
    # A leader whose renewals stalled for a whole lease duration is not healthy either.
    assert a.health() == (False, f"leader: lease {NS}/{NAME} not renewed for 25.0s")
    assert a.try_acquire_or_renew()
    assert a.health()[0]


# --------------------------------------------------------------------------------------
# The loops, in real time (short timings)

FAST = LeaseTimings(lease_duration=1, renew_deadline=0.5, retry_period=0.1)


def test_the_leader_keeps_renewing_until_stopped(api: FakeLeases) -> None:
    a = elector(api, "a", time.monotonic, FAST)
    assert a.acquire(threading.Event())
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(a.keep_leading(stop)))
    thread.start()
    writes = api.writes
    deadline = time.monotonic() + 5
    while api.writes < writes + 3 and time.monotonic() < deadline:
        stop.wait(0.05)
    stop.set()
    thread.join(5)
    assert result == [True]
    assert api.writes >= writes + 3
    assert ("LeaderElection", "a became leader", "Normal") in api.events


def test_failing_renewals_end_leadership_at_the_renew_deadline(api: FakeLeases) -> None:
    a = elector(api, "a", time.monotonic, FAST)
    assert a.acquire(threading.Event())
    api.fail = KubeError("update lease elasticlm-operator", 503, "Service Unavailable")
    assert a.keep_leading(threading.Event()) is False
    since = time.monotonic() - (a.last_renewed or 0)
    assert FAST.renew_deadline <= since < FAST.lease_duration
    assert "503" in a.why_lost()


def test_a_hanging_renewal_still_ends_leadership_at_the_renew_deadline(api: FakeLeases) -> None:
    a = elector(api, "a", time.monotonic, FAST)
    assert a.acquire(threading.Event())
    api.hang.set()
    try:
        assert a.keep_leading(threading.Event()) is False
        since = time.monotonic() - (a.last_renewed or 0)
        assert FAST.renew_deadline <= since < FAST.lease_duration
    finally:
        api.unhang.set()


def test_losing_the_lease_to_another_holder_ends_leadership_at_once(api: FakeLeases) -> None:
    a = elector(api, "a", time.monotonic, FAST)
    assert a.acquire(threading.Event())
    # Someone else holds it now (say the clock of this process had stalled).
    obj = api.objects[(NS, NAME)]
    api._store({**obj, "spec": {**obj["spec"], "holderIdentity": "b"}})
    started = time.monotonic()
    assert a.keep_leading(threading.Event()) is False
    assert time.monotonic() - started < FAST.renew_deadline
    assert a.lost_to == "b"


def test_a_standby_stops_waiting_when_asked(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    stop = threading.Event()
    stop.set()
    assert b.acquire(stop) is False


# --------------------------------------------------------------------------------------
# Identity, namespace, configuration, probes


def test_identity_is_the_pod_name_and_a_random_suffix() -> None:
    one, two = default_identity({"POD_NAME": "op-7d9f"}), default_identity({"POD_NAME": "op-7d9f"})
    assert one.startswith("op-7d9f_")
    assert two.startswith("op-7d9f_")
    assert one != two
    assert "_" in default_identity({})  # the hostname


def test_namespace_from_env_then_service_account(tmp_path: Path) -> None:
    mounted = tmp_path / "namespace"
    mounted.write_text("elasticlm-system\n")
    assert default_namespace({"POD_NAMESPACE": "ops"}, mounted) == "ops"
    assert default_namespace({}, mounted) == "elasticlm-system"
    with pytest.raises(LeaderElectionError, match="pass --leader-election-namespace NS"):
        default_namespace({}, tmp_path / "missing")


def test_config_problems() -> None:
    config = LeaderElectionConfig("", "", "a", LeaseTimings(10, 10, 2))
    problems = config.problems()
    assert any("--leader-election-id" in p for p in problems)
    assert any("--leader-election-namespace" in p for p in problems)
    assert any("--leader-election-renew-deadline" in p for p in problems)


def _get(app: Callable[..., Any], path: str) -> tuple[str, bytes]:
    answer: list[str] = []
    body = b"".join(
        app(
            {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
            lambda status, headers: answer.append(status),
        )
    )
    return answer[0], body


def test_probes_and_metrics_on_one_port() -> None:
    state = {"ok": True}
    app = health.application(
        lambda: (state["ok"], "standby: fine"), lambda: (False, "no answer yet")
    )
    assert _get(app, "/healthz") == ("200 OK", b"standby: fine\n")
    assert _get(app, "/readyz") == ("503 Service Unavailable", b"no answer yet\n")
    state["ok"] = False
    assert _get(app, "/healthz")[0] == "503 Service Unavailable"
    status, body = _get(app, "/metrics")
    assert status == "200 OK"
    assert b"elasticlm_leader" in body
