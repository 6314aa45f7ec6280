"""The ReplicaSet controller, after pkg/controller/replicaset/replica_set.go.

A pass over one ReplicaSet:

1. Claims the active pods of its namespace: adopts orphans its selector matches (an
   owner reference with `controller` and `blockOwnerDeletion`), releases pods it owns
   that no longer match. Finished and terminating pods do not count.
2. Creates pods from its template (named `<replicaset>-<random>`) or deletes the first
   victims of `pods.deletion_order` until it owns `spec.replicas` pods (at most 500 at a
   time, as the controller's burst).
3. Writes status: replicas, fullyLabeledReplicas (pods carrying all template labels),
   readyReplicas, availableReplicas (ready for more than minReadySeconds),
   observedGeneration, and a ReplicaFailure condition while pods cannot be made.

The store is this controller's cache and its writes land at once, so it needs none of
the "expectations" a real controller keeps for writes its informer has not yet seen.
"""

from __future__ import annotations

import logging

from devcluster import selectors
from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.gc import ObjectAPI
from devcluster.store import APIError, Obj, rfc3339
from devcluster.values import as_dict, as_list
from devcluster.workloads import pods as podfacts
from devcluster.workloads.events import NORMAL, WARNING, EventRecorder
from devcluster.workloads.templates import controller_ref, owner_reference, pod_from_template

log = logging.getLogger(__name__)

PODS = ("", "pods")
REPLICA_SETS = ("apps", "replicasets")
BURST_REPLICAS = 500
REPLICA_FAILURE = "ReplicaFailure"
#: How long a ReplicaSet that could not make or delete pods waits before trying again.
FAILURE_RETRY_SECONDS = 5.0


def selector_of(obj: Obj) -> selectors.LabelSelector | None:
    """The selector of a Deployment or ReplicaSet; None when it cannot select."""
    try:
        selector = selectors.label_selector_from_dict(as_dict(obj.get("spec")).get("selector"))
    except selectors.SelectorError:
        return None
    return None if selector.empty() else selector


def labels_of(obj: Obj) -> dict[str, str]:
    return as_dict(obj["metadata"].get("labels"))


def replica_set_status(rs: Obj, owned: list[Obj], now: float, failure: str | None) -> Obj:
    """calculateStatus: counts over the owned active pods, and ReplicaFailure."""
    spec = as_dict(rs.get("spec"))
    template_labels = as_dict(as_dict(as_dict(spec.get("template")).get("metadata")).get("labels"))
    min_ready = int(spec.get("minReadySeconds") or 0)
    labelled = sum(
        1 for p in owned if all(labels_of(p).get(k) == v for k, v in template_labels.items())
    )
    ready = [p for p in owned if podfacts.is_ready(p)]
    available = sum(1 for p in ready if podfacts.is_available(p, min_ready, now))
    status: Obj = {"replicas": len(owned)}
    counts = {
        "fullyLabeledReplicas": labelled,
        "readyReplicas": len(ready),
        "availableReplicas": available,
        "observedGeneration": int(rs["metadata"].get("generation") or 1),
    }
    status.update({key: value for key, value in counts.items() if value})
    old_conditions = [
        c for c in as_list(as_dict(rs.get("status")).get("conditions")) if isinstance(c, dict)
    ]
    failing = [c for c in old_conditions if c.get("type") == REPLICA_FAILURE]
    conditions = [c for c in old_conditions if c.get("type") != REPLICA_FAILURE]
    if failure is not None:
        diff = len(owned) - int(spec.get("replicas", 1) or 0)
        reason = "FailedCreate" if diff < 0 else "FailedDelete"
        conditions.append(
            failing[0]
            if failing
            else {
                "type": REPLICA_FAILURE,
                "status": "True",
                "lastTransitionTime": rfc3339(),
                "reason": reason,
                "message": failure,
            }
        )
    if conditions:
        status["conditions"] = conditions
    return status


def next_availability(rs: Obj, owned: list[Obj], now: float) -> float | None:
    """Seconds until a ready pod becomes available (when minReadySeconds holds one back)."""
    min_ready = int(as_dict(rs.get("spec")).get("minReadySeconds") or 0)
    if min_ready <= 0:
        return None
    moments = [podfacts.available_at(p, min_ready) for p in owned]
    waits = [moment - now for moment in moments if moment is not None and moment >= now]
    # + a little: availability needs the moment strictly passed
    return min(waits) + 0.05 if waits else None


class ReplicaSetController:
    """Keeps each ReplicaSet's pods at its replicas; `sync` is one pass."""

    def __init__(self, cluster: ObjectAPI, burst: int = BURST_REPLICAS) -> None:
        self.cluster = cluster
        self.burst = burst
        self.events = EventRecorder(cluster, "replicaset-controller")

    def sync(self, namespace: str, name: str, now: float) -> float | None:
        """One pass; returns seconds until the ReplicaSet needs another, if it does."""
        store = self.cluster.store
        rs = store.get(REPLICA_SETS, namespace, name)
        if rs is None:
            return None
        selector = selector_of(rs)
        if selector is None:
            return None
        active = [p for p in store.items(PODS, namespace) if podfacts.is_active(p)]
        owned = self.claim(rs, selector, active)
        failure = None
        if not rs["metadata"].get("deletionTimestamp"):
            failure = self.manage_replicas(rs, owned, now)
        status = replica_set_status(rs, owned, now, failure)
        if status != rs.get("status"):
            self._write_status(rs, status)
        if failure is not None:
            return FAILURE_RETRY_SECONDS
        return next_availability(rs, owned, now)

    # ---- ownership

    def claim(self, rs: Obj, selector: selectors.LabelSelector, active: list[Obj]) -> list[Obj]:
        """The active pods `rs` owns after adopting and releasing (ClaimPods)."""
        uid = rs["metadata"]["uid"]
        deleting = bool(rs["metadata"].get("deletionTimestamp"))
        owned = []
        for pod in active:
            ref = controller_ref(pod)
            matches = selector.matches(labels_of(pod))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    owned.append(pod)
                elif not deleting:
                    self._set_owner(pod, None)
            elif matches and not deleting:
                adopted = self._set_owner(pod, rs)
                if adopted is not None:
                    owned.append(adopted)
        return owned

    def _set_owner(self, pod: Obj, owner: Obj | None) -> Obj | None:
        """Adopt `pod` for `owner`, or release it from its controller when None."""

        def change(obj: Obj) -> None:
            refs = [
                r for r in as_list(obj["metadata"].get("ownerReferences")) if isinstance(r, dict)
            ]
            refs = [r for r in refs if not r.get("controller")]
            if owner is not None:
                refs.append(owner_reference(owner, "apps/v1", "ReplicaSet"))
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)

        rt = self.cluster.registry.get("", "v1", "pods")
        assert rt is not None
        m = pod["metadata"]
        try:
            return self.cluster.mutate(rt, m["namespace"], m["name"], change)
        except APIError as exc:
            log.warning("could not change the owner of pod %s: %s", m["name"], exc.message)
            return None

    # ---- replicas

    def manage_replicas(self, rs: Obj, owned: list[Obj], now: float) -> str | None:
        """Create or delete pods towards spec.replicas; the error, if any."""
        desired = int(as_dict(rs.get("spec")).get("replicas", 1) or 0)
        diff = len(owned) - desired
        if diff < 0:
            return self._create_pods(rs, min(-diff, self.burst))
        if diff > 0:
            victims = podfacts.pods_to_delete(owned, min(diff, self.burst), self._related(rs), now)
            return self._delete_pods(rs, victims)
        return None

    def _related(self, rs: Obj) -> list[Obj]:
        """Active pods of every ReplicaSet with the same controller (colocation ranks)."""
        store = self.cluster.store
        namespace = rs["metadata"]["namespace"]
        owner = controller_ref(rs)
        siblings = {rs["metadata"]["uid"]}
        if owner is not None:
            for other in store.items(REPLICA_SETS, namespace):
                ref = controller_ref(other)
                if ref is not None and ref.get("uid") == owner.get("uid"):
                    siblings.add(other["metadata"]["uid"])
        return [
            p
            for p in store.items(PODS, namespace)
            if podfacts.is_active(p) and (controller_ref(p) or {}).get("uid") in siblings
        ]

    def _create_pods(self, rs: Obj, count: int) -> str | None:
        rt = self.cluster.registry.get("", "v1", "pods")
        assert rt is not None
        for _ in range(count):
            try:
                pod = self.cluster.create(
                    rt, rs["metadata"]["namespace"], pod_from_template(rs), Ctx(system=True)
                )
            except APIError as exc:
                self.events.record(rs, WARNING, "FailedCreate", f"Error creating: {exc.message}")
                return exc.message
            self.events.record(
                rs, NORMAL, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}"
            )
        return None

    def _delete_pods(self, rs: Obj, victims: list[Obj]) -> str | None:
        rt = self.cluster.registry.get("", "v1", "pods")
        assert rt is not None
        for pod in victims:
            m = pod["metadata"]
            try:
                self.cluster.delete(
                    rt, m["namespace"], m["name"], DeleteOptions(precondition_uid=m["uid"])
                )
            except APIError as exc:
                if exc.code == 404:
                    continue
                self.events.record(rs, WARNING, "FailedDelete", f"Error deleting: {exc.message}")
                return exc.message
            self.events.record(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {m['name']}")
        return None

    def _write_status(self, rs: Obj, status: Obj) -> None:
        rt = self.cluster.registry.get("apps", "v1", "replicasets")
        assert rt is not None

        def change(obj: Obj) -> None:
            obj["status"] = status

        m = rs["metadata"]
        try:
            self.cluster.mutate(rt, m["namespace"], m["name"], change, subresource="status")
        except APIError as exc:
            log.warning("could not write the status of replicaset %s: %s", m["name"], exc.message)
