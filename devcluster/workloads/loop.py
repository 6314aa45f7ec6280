"""`WorkloadControllers`: runs the ReplicaSet and Deployment controllers on the API
server's event loop, as kube-controller-manager would run them next to it.

Store events mark what needs a pass: a ReplicaSet when it or one of its pods changes
(or an orphan pod its selector matches appears), a Deployment when it or one of its
ReplicaSets changes, or when a pod of a Recreate Deployment goes. Passes run shortly
after, ReplicaSets first, round after round until nothing is marked. A pass may ask to
come back later (a pod that becomes available after minReadySeconds, a progress
deadline): a timer marks it again then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from devcluster import selectors
from devcluster.gc import ObjectAPI
from devcluster.store import StoreEvent
from devcluster.values import as_dict
from devcluster.workloads.deployment import DEPLOYMENTS, DeploymentController
from devcluster.workloads.replicaset import PODS, REPLICA_SETS, ReplicaSetController, labels_of
from devcluster.workloads.templates import controller_ref

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class WorkloadControllers:
    """Schedules the passes; `attach()` once, `start()` on the server's loop."""

    def __init__(
        self,
        cluster: ObjectAPI,
        delay: float = 0.005,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.delay = delay
        self.clock = clock
        self.replica_sets = ReplicaSetController(cluster)
        self.deployments = DeploymentController(cluster)
        self._dirty_sets: set[Key] = set()
        self._dirty_deployments: set[Key] = set()
        self._timers: dict[tuple[str, Key], tuple[float, asyncio.TimerHandle]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._running = False

    def attach(self) -> None:
        self.cluster.store.add_listener(self.on_event)
        self.resync()  # whatever a snapshot left half-done

    def resync(self) -> None:
        """Mark every ReplicaSet and Deployment for a pass."""
        store = self.cluster.store
        self._dirty_sets.update(_key(rs) for rs in store.items(REPLICA_SETS))
        self._dirty_deployments.update(_key(d) for d in store.items(DEPLOYMENTS))
        self._schedule()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._schedule()

    async def stop(self) -> None:
        self._running = False
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # ---- what needs a pass

    def on_event(self, event: StoreEvent) -> None:
        if event.gr == DEPLOYMENTS:
            self._dirty_deployments.add((event.namespace, event.name))
        elif event.gr == REPLICA_SETS:
            self._dirty_sets.add((event.namespace, event.name))
            owner = controller_ref(event.obj)
            if owner is not None and owner.get("kind") == "Deployment":
                self._dirty_deployments.add((event.namespace, str(owner.get("name"))))
            elif owner is None:  # an orphan: a Deployment may adopt it
                self._mark_all(DEPLOYMENTS, event.namespace, self._dirty_deployments)
        elif event.gr == PODS:
            self._on_pod(event)
        else:
            return
        self._schedule()

    def _on_pod(self, event: StoreEvent) -> None:
        owner = controller_ref(event.obj)
        if owner is None:
            if event.type != "DELETED":  # an orphan: a ReplicaSet may adopt it
                self._mark_selecting(event)
            return
        if owner.get("kind") != "ReplicaSet":
            return
        key = (event.namespace, str(owner.get("name")))
        self._dirty_sets.add(key)
        if event.type == "DELETED":  # Recreate waits for the old pods to be gone
            rs = self.cluster.store.get(REPLICA_SETS, *key)
            rs_owner = controller_ref(rs) if rs is not None else None
            if rs_owner is not None and rs_owner.get("kind") == "Deployment":
                self._dirty_deployments.add((event.namespace, str(rs_owner.get("name"))))

    def _mark_selecting(self, event: StoreEvent) -> None:
        labels = labels_of(event.obj)
        for rs in self.cluster.store.items(REPLICA_SETS, event.namespace):
            try:
                selector = selectors.label_selector_from_dict(
                    as_dict(rs.get("spec")).get("selector")
                )
            except selectors.SelectorError:
                continue
            if not selector.empty() and selector.matches(labels):
                self._dirty_sets.add(_key(rs))

    def _mark_all(self, gr: tuple[str, str], namespace: str, dirty: set[Key]) -> None:
        for obj in self.cluster.store.items(gr, namespace):
            dirty.add(_key(obj))

    # ---- running passes

    def _schedule(self) -> None:
        if not self._running or self._loop is None or self._handle is not None:
            return
        if not (self._dirty_sets or self._dirty_deployments):
            return
        try:
            self._handle = self._loop.call_later(self.delay, self._run)
        except RuntimeError:  # loop closed
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        try:
            self.run_pending()
        except Exception:
            log.exception("a workload controller pass failed")
        self._schedule()

    def run_pending(self, max_rounds: int = 50) -> None:
        """Run passes until nothing is marked (also usable without a loop)."""
        for _ in range(max_rounds):
            if not (self._dirty_sets or self._dirty_deployments):
                return
            sets, self._dirty_sets = self._dirty_sets, set()
            for key in sorted(sets):
                self._pass("rs", key, self.replica_sets.sync)
            deployments, self._dirty_deployments = self._dirty_deployments, set()
            for key in sorted(deployments):
                self._pass("deploy", key, self.deployments.sync)

    def _pass(self, kind: str, key: Key, sync: Callable[[str, str, float], float | None]) -> None:
        try:
            again = sync(key[0], key[1], self.clock())
        except Exception:
            log.exception("the %s pass of %s/%s failed", kind, *key)
            again = 1.0
        if again is not None:
            self._requeue(kind, key, again)

    def _requeue(self, kind: str, key: Key, seconds: float) -> None:
        if self._loop is None or not self._running:
            return
        due = self._loop.time() + seconds
        current = self._timers.get((kind, key))
        if current is not None:
            if current[0] <= due:
                return  # an earlier pass is already due
            current[1].cancel()

        def fire() -> None:
            self._timers.pop((kind, key), None)
            # looked up now: a round swaps the sets for new ones
            (self._dirty_sets if kind == "rs" else self._dirty_deployments).add(key)
            self._schedule()

        self._timers[(kind, key)] = (due, self._loop.call_later(seconds, fire))


def _key(obj: dict[str, object]) -> Key:
    m = as_dict(obj.get("metadata"))
    return (str(m.get("namespace") or ""), str(m.get("name")))
