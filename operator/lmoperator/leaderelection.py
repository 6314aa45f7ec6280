"""Leader election: of several operator replicas, only the one holding the Lease acts.

kopf's peering is not leader election (replicas of equal priority all pause), so the
operator elects a leader the way Kubernetes controllers do, with a
coordination.k8s.io/v1 Lease (client-go's `leaderelection`; the decisions are the pure
functions of `lmoperator.reconcile.lease`). `lmoperator.main` runs kopf only after
`LeaderElector.acquire` returned, renews in a thread of its own (`keep_leading`), stops
the process at once when a renewal has failed for the renew deadline, and releases the
Lease after a graceful stop so that a standby takes over on its next try.

The API calls go through `kube.Kube` (get, create, update of one Lease; events); each
runs with a timeout, and the leader's renewals are bounded by the renew deadline even
when a request hangs.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lmoperator.api import kinds
from lmoperator.kube import REQUEST_TIMEOUT_SECONDS, KubeError
from lmoperator.operator_metrics import LEADER
from lmoperator.reconcile import lease

logger = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "elasticlm-operator"
#: Where a pod finds its namespace (the service account's mount), as controller-runtime
#: looks for the leader-election namespace.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: The reason of the Events posted on the Lease (client-go's).
EVENT_REASON = "LeaderElection"


class LeaseApi(Protocol):
    """What leader election needs from the API server (`kube.Kube` provides it)."""

    def get(
        self, kind: kinds.ResourceKind, namespace: str, name: str, timeout: float = ...
    ) -> dict[str, Any] | None: ...

    def create(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        manifest: Mapping[str, Any],
        timeout: float = ...,
    ) -> dict[str, Any] | None: ...

    def replace(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        manifest: Mapping[str, Any],
        timeout: float = ...,
    ) -> dict[str, Any] | None: ...

    def create_event(
        self, involved: Mapping[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None: ...


class LeaderElectionError(Exception):
    """Leader election cannot start as configured; the message says what to change."""


def default_identity(environ: Mapping[str, str] | None = None) -> str:
    """This replica's name in the Lease: the pod's name (POD_NAME from the downward API,
    else the hostname, which is the pod's name in a pod) and a random suffix, so that a
    restarted process never mistakes its predecessor's lease for its own."""
    env = os.environ if environ is None else environ
    base = env.get("POD_NAME") or socket.gethostname() or "elasticlm-operator"
    return f"{base}_{secrets.token_hex(5)}"


def default_namespace(
    environ: Mapping[str, str] | None = None, service_account: Path | None = None
) -> str:
    """The namespace of the Lease when none is given: POD_NAMESPACE, else the namespace
    of the pod's service account."""
    env = os.environ if environ is None else environ
    service_account = service_account or SERVICE_ACCOUNT_NAMESPACE
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        found = service_account.read_text().strip()
    except OSError:
        found = ""
    if not found:
        raise LeaderElectionError(
            "--leader-elect needs the namespace of its Lease: not running in a pod "
            f"({service_account} is missing) and POD_NAMESPACE is not set; pass "
            "--leader-election-namespace NS"
        )
    return found


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str = DEFAULT_LEASE_NAME
    identity: str = field(default_factory=default_identity)
    timings: lease.LeaseTimings = field(default_factory=lease.LeaseTimings)

    def problems(self) -> list[str]:
        found = list(self.timings.problems())
        if not self.name:
            found.append("--leader-election-id must not be empty")
        if not self.namespace:
            found.append("--leader-election-namespace must not be empty")
        return found


class LeaderElector:
    """One candidate: waits for the Lease, holds it, renews it, releases it."""

    def __init__(
        self,
        api: LeaseApi,
        config: LeaderElectionConfig,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.wall = wall
        self._lock = threading.Lock()
        self.observation: lease.Observation | None = None
        self.resource_version = ""
        self.uid = ""
        self.leading = False
        self.last_renewed: float | None = None
        self.lost_to: str | None = None
        self.started_at = clock()
        self.last_attempt: float | None = None
        self.last_answer: float | None = None
        self._holder_seen: str | None = None
        self._last_error = ""

    @property
    def where(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

    @property
    def _request_timeout(self) -> float:
        return min(REQUEST_TIMEOUT_SECONDS, self.config.timings.renew_deadline)

    # ----------------------------------------------------------------------------------
    # One attempt

    def try_acquire_or_renew(self) -> bool:
        """One round trip: read the Lease, decide, write. True when this candidate holds
        the Lease afterwards. API errors count as a failed attempt (logged once each)."""
        now = self.clock()
        try:
            acquired = self._attempt(now)
        except KubeError as exc:
            if str(exc) != self._last_error:
                logger.warning(f"Leader election failed lease={self.where}: {exc}")
                self._last_error = str(exc)
            acquired = False
        else:
            self._last_error = ""
            with self._lock:
                self.last_answer = self.clock()
        with self._lock:
            self.last_attempt = self.clock()
        return acquired

    def _attempt(self, now: float) -> bool:
        timings, name, namespace = self.config.timings, self.config.name, self.config.namespace
        if self.leading and self.observation is not None and self.resource_version:
            # The leader renews against what it wrote last (one request); a conflict
            # means the Lease changed under it, and the full path below finds out how.
            identity = self.config.identity
            renewed = lease.decide(self.observation, identity, timings, now, self.wall())
            if self._write(renewed, now, self.resource_version):
                return True
        obj = self.api.get(kinds.LEASE, namespace, name, timeout=self._request_timeout)
        if obj is None:
            with self._lock:
                self.observation = None
            decision = lease.decide(None, self.config.identity, timings, now, self.wall())
        else:
            observed = lease.parse_lease(obj)
            with self._lock:
                self.observation = lease.observe(self.observation, observed.record, now)
                self.resource_version, self.uid = observed.resource_version, observed.uid
                observation = self.observation
            self._note_holder(observed.record.holder)
            decision = lease.decide(observation, self.config.identity, timings, now, self.wall())
        if isinstance(decision, lease.Wait):
            if self.leading:
                with self._lock:
                    self.lost_to = decision.holder
            return False
        return self._write(decision, now, self.resource_version if obj is not None else "")

    def _write(self, decision: lease.Decision, now: float, resource_version: str) -> bool:
        name, namespace = self.config.name, self.config.namespace
        if isinstance(decision, lease.Wait):
            return False
        manifest = lease.lease_manifest(name, namespace, decision.record, resource_version)
        if isinstance(decision, lease.Create):
            result = self.api.create(
                kinds.LEASE, namespace, manifest, timeout=self._request_timeout
            )
        else:
            result = self.api.replace(
                kinds.LEASE, namespace, manifest, timeout=self._request_timeout
            )
        if result is None:  # 409: another candidate wrote first
            return False
        written = lease.parse_lease(result)
        with self._lock:
            self.observation = lease.observe(None, written.record, now)
            self.resource_version, self.uid = written.resource_version, written.uid
            self.last_renewed = now
            newly = not self.leading
            self.leading = True
        if newly:
            LEADER.set(1)
            self._holder_seen = self.config.identity
            logger.info(
                f"Became the leader lease={self.where} identity={self.config.identity} "
                f"transitions={written.record.transitions}"
            )
        return True

    def _note_holder(self, holder: str) -> None:
        """Log who leads when that changes (a standby's view of the election)."""
        if holder == self._holder_seen or holder == self.config.identity:
            return
        self._holder_seen = holder
        if self.leading:  # lost: keep_leading says so
            return
        if holder:
            logger.info(f"Standing by: the leader is holder={holder} lease={self.where}")
        else:
            logger.info(f"The lease was released lease={self.where}")

    # ----------------------------------------------------------------------------------
    # The loops

    def acquire(self, stop: threading.Event) -> bool:
        """Try every retry period until this candidate leads (True) or `stop` is set
        (False)."""
        logger.info(
            f"Leader election started lease={self.where} identity={self.config.identity} "
            f"leaseDuration={self.config.timings.lease_duration}s "
            f"renewDeadline={self.config.timings.renew_deadline:g}s "
            f"retryPeriod={self.config.timings.retry_period:g}s"
        )
        LEADER.set(0)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            stop.wait(self.config.timings.retry_period)
        return False

    def keep_leading(self, stop: threading.Event) -> bool:
        """Renew every retry period until `stop` is set (True), or until renewing has
        failed for the renew deadline or another candidate holds the Lease (False: the
        caller must stop acting at once)."""
        timings = self.config.timings
        self._post_event(f"{self.config.identity} became leader")
        while True:
            last = self.last_renewed if self.last_renewed is not None else self.clock()
            if stop.wait(max(0.0, last + timings.retry_period - self.clock())):
                return True
            while True:
                remaining = last + timings.renew_deadline - self.clock()
                if self.lost_to is not None or remaining <= 0:
                    return False
                if self._bounded_attempt(remaining):
                    break
                if self.lost_to is not None:
                    return False
                remaining = last + timings.renew_deadline - self.clock()
                if stop.wait(max(0.0, min(timings.retry_period, remaining))):
                    return True

    def _bounded_attempt(self, timeout: float) -> bool:
        """An attempt that gives up after `timeout` seconds, even if its request hangs
        (the request's thread is left behind; the process is about to stop anyway)."""
        result: list[bool] = []
        worker = threading.Thread(
            target=lambda: result.append(self.try_acquire_or_renew()),
            name="lease-renew",
            daemon=True,
        )
        worker.start()
        worker.join(timeout)
        return bool(result and result[0])

    def why_lost(self) -> str:
        if self.lost_to is not None:
            return f"another replica holds the lease now (holder={self.lost_to})"
        since = self.clock() - (self.last_renewed or self.started_at)
        return (
            f"failed to renew the lease for {since:.1f}s "
            f"(renew deadline {self.config.timings.renew_deadline:g}s)"
            + (f": {self._last_error}" if self._last_error else "")
        )

    def release(self) -> bool:
        """Give the Lease up (empty holder) after a graceful stop: True when released.
        Nothing is written when this candidate does not lead, and a conflict means
        another candidate holds the Lease already."""
        with self._lock:
            if not self.leading or self.observation is None:
                return False
            self.leading = False
            record = lease.released_record(self.observation.record, self.wall())
            resource_version = self.resource_version
        LEADER.set(0)
        manifest = lease.lease_manifest(
            self.config.name, self.config.namespace, record, resource_version
        )
        try:
            result = self.api.replace(
                kinds.LEASE, self.config.namespace, manifest, timeout=self._request_timeout
            )
        except KubeError as exc:
            logger.warning(f"Failed to release the lease lease={self.where}: {exc}")
            return False
        if result is None:
            logger.warning(f"Did not release the lease lease={self.where}: it changed meanwhile")
            return False
        logger.info(f"Released the lease lease={self.where} identity={self.config.identity}")
        self._post_event(f"{self.config.identity} stopped leading")
        return True

    def _post_event(self, message: str) -> None:
        """An Event on the Lease, as client-go records one ("X became leader")."""
        if not self.uid:
            return
        involved = {
            "apiVersion": kinds.LEASE.api_version,
            "kind": kinds.LEASE.kind,
            "name": self.config.name,
            "namespace": self.config.namespace,
            "uid": self.uid,
        }
        try:
            self.api.create_event(involved, EVENT_REASON, message)
        except KubeError as exc:
            logger.warning(f"Failed to post an event on the lease lease={self.where}: {exc}")

    # ----------------------------------------------------------------------------------
    # Probes

    def health(self) -> tuple[bool, str]:
        """Liveness: a standby is alive while its attempts go on (whatever their result:
        an unreachable API server is no reason to restart); the leader while its lease
        is renewed (it stops itself at the renew deadline, so failing here means that
        its renewals stalled)."""
        now = self.clock()
        timings = self.config.timings
        with self._lock:
            leading, renewed, attempted = self.leading, self.last_renewed, self.last_attempt
        if leading:
            age = now - (renewed if renewed is not None else self.started_at)
            if age < timings.lease_duration:
                return True, f"leader: lease {self.where} renewed {age:.1f}s ago"
            return False, f"leader: lease {self.where} not renewed for {age:.1f}s"
        age = now - (attempted if attempted is not None else self.started_at)
        if age <= timings.lease_duration + timings.renew_deadline:
            return True, f"standby: last try for lease {self.where} {age:.1f}s ago"
        return False, f"standby: no try for lease {self.where} for {age:.1f}s"

    def ready(self) -> tuple[bool, str]:
        """Readiness: leader or standby alike once a first attempt has reached the API
        server (a standby must count as ready, or a rolling update would wait forever for
        a new replica that cannot lead while the old one does)."""
        with self._lock:
            leading, answered = self.leading, self.last_answer
        if answered is None:
            return False, f"no answer yet about lease {self.where}"
        return True, "leader" if leading else "standby"
