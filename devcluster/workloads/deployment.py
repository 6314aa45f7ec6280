"""The Deployment controller, after pkg/controller/deployment (syncDeployment and the
files it calls). The decisions are pure (`rollout`, `status`, `templates`); this module
reads the store, carries them out and writes the status.

A pass over one Deployment:

1. Claims the ReplicaSets of its namespace (adopts orphans its selector matches,
   releases those that no longer match), oldest first.
2. Being deleted: only the status. Paused, or a scaling event (spec.replicas differs
   from what the active ReplicaSets were sized for): `proportional_scale`, no rollout.
3. Otherwise the rollout: the new ReplicaSet (the one with the Deployment's template) is
   found or created (`<deployment>-<pod-template-hash>`, its revision one past the old
   ones), then `rollout_step` scales it and the old ones; once complete, old
   ReplicaSets beyond revisionHistoryLimit are deleted.
4. Writes status and the `deployment.kubernetes.io/revision` annotation in one status
   write, and asks to come back when the progress deadline must be checked.
"""

from __future__ import annotations

import copy
import logging

from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.gc import ObjectAPI
from devcluster.resources.apps import RECREATE
from devcluster.resources.types import ResourceType
from devcluster.store import APIError, Obj
from devcluster.values import as_dict
from devcluster.workloads import status as conditions
from devcluster.workloads.events import NORMAL, WARNING, EventRecorder
from devcluster.workloads.pods import timestamp
from devcluster.workloads.replicaset import PODS, REPLICA_SETS, labels_of, selector_of
from devcluster.workloads.rollout import (
    REVISION,
    ReplicaSetState,
    RolloutStrategy,
    Scale,
    history_to_delete,
    is_scaling_event,
    max_surge,
    new_replicas,
    proportional_scale,
    rollout_step,
)
from devcluster.workloads.templates import (
    controller_ref,
    equal_ignore_hash,
    find_new_replica_set,
    new_replica_set,
    owner_reference,
    set_new_annotations,
    set_replicas_annotations,
)

log = logging.getLogger(__name__)

DEPLOYMENTS = ("apps", "deployments")
CREATE_FAILED = "ReplicaSetCreateError"


def state(rs: Obj) -> ReplicaSetState:
    return ReplicaSetState.of(rs, timestamp(rs["metadata"].get("creationTimestamp")) or 0.0)


def state_of(rs: Obj | None) -> ReplicaSetState | None:
    return state(rs) if rs is not None else None


def with_new(new: Obj | None, olds: list[Obj]) -> list[Obj]:
    """All of a Deployment's ReplicaSets: the old ones, then the new one if any."""
    return [*olds, *([new] if new is not None else [])]


def revision_of(rs: Obj) -> int:
    return state(rs).revision


def set_progressing(d: Obj, status: str, reason: str, message: str, now: float) -> None:
    """Set the Progressing condition of the working copy, when it has a deadline."""
    if conditions.progress_deadline(d) is not None:
        condition = conditions.new_condition(conditions.PROGRESSING, status, reason, message, now)
        conditions.set_condition(d["status"], condition)


class DeploymentController:
    """Rolls each Deployment's ReplicaSets towards its template; `sync` is one pass."""

    def __init__(self, cluster: ObjectAPI) -> None:
        self.cluster = cluster
        self.events = EventRecorder(cluster, "deployment-controller")

    def _rt(self, plural: str) -> ResourceType:
        rt = self.cluster.registry.get("apps", "v1", plural)
        assert rt is not None
        return rt

    # ---- the pass

    def sync(self, namespace: str, name: str, now: float) -> float | None:
        """One pass; returns seconds until the Deployment needs another, if it does."""
        stored = self.cluster.store.get(DEPLOYMENTS, namespace, name)
        if stored is None:
            return None
        d = copy.deepcopy(self._rt("deployments").present(stored))
        d.setdefault("status", {})
        if selector_of(d) is None:
            self.events.record(
                d, WARNING, "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )  # fmt: skip
            return None
        rs_list = self.claim_replica_sets(d)
        if d["metadata"].get("deletionTimestamp"):
            new, olds = self._new_and_old(d, rs_list, now, create=False)
            status = conditions.calculate_status(d, self._states(new, olds), state_of(new), now)
            self._finish(stored, d, status)
            return None
        paused = conditions.paused_condition(d, now)
        if paused is not None:
            conditions.set_condition(d["status"], paused)
        desired = conditions.desired_replicas(d)
        if as_dict(d.get("spec")).get("paused") or is_scaling_event(
            desired, [state(rs) for rs in rs_list]
        ):
            self._finish(stored, d, self._sync_scaling(d, rs_list, now))
            return None  # no progress is estimated while paused or resizing
        status = self._rollout(d, rs_list, now)
        self._finish(stored, d, status)
        return conditions.progress_check_in(d, status, now)

    def _states(self, new: Obj | None, olds: list[Obj]) -> list[ReplicaSetState]:
        return [state(rs) for rs in with_new(new, olds)]

    def _reload(self, rs: Obj | None) -> Obj | None:
        """The stored state of a ReplicaSet this pass may have changed."""
        if rs is None:
            return None
        m = rs["metadata"]
        return self.cluster.store.get(REPLICA_SETS, m["namespace"], m["name"])

    def _reload_all(self, rs_list: list[Obj]) -> list[Obj]:
        return [rs for rs in map(self._reload, rs_list) if rs is not None]

    def _sync_scaling(self, d: Obj, rs_list: list[Obj], now: float) -> Obj:
        """A paused Deployment or a scaling event: resize, no rollout (`sync`)."""
        new, olds = self._new_and_old(d, rs_list, now, create=False)
        scales = proportional_scale(
            RolloutStrategy.of(d),
            conditions.desired_replicas(d),
            state_of(new),
            [state(rs) for rs in olds],
            int(d["status"].get("replicas") or 0),
        )
        self._apply(d, with_new(new, olds), scales)
        olds, new = self._reload_all(olds), self._reload(new)
        if as_dict(d.get("spec")).get("paused"):
            self._clean_history(d, olds)
        return conditions.calculate_status(d, self._states(new, olds), state_of(new), now)

    def _rollout(self, d: Obj, rs_list: list[Obj], now: float) -> Obj:
        strategy = RolloutStrategy.of(d)
        desired = conditions.desired_replicas(d)
        new, olds = self._new_and_old(d, rs_list, now, create=strategy.type != RECREATE)
        running = strategy.type == RECREATE and self._old_pods_running(d, olds)
        step = rollout_step(strategy, desired, state_of(new), [state(rs) for rs in olds], running)
        if step.create_new:
            new, olds = self._new_and_old(d, rs_list, now, create=True)
            if new is not None:
                step = rollout_step(
                    strategy, desired, state(new), [state(rs) for rs in olds], running
                )
        scaled = self._apply(d, with_new(new, olds), list(step.scales))
        olds, new = self._reload_all(olds), self._reload(new)
        if not scaled and conditions.deployment_complete(d, d["status"]):
            self._clean_history(d, olds)
            olds = self._reload_all(olds)
        return conditions.rollout_status(d, self._states(new, olds), state_of(new), now)

    # ---- ReplicaSets

    def claim_replica_sets(self, d: Obj) -> list[Obj]:
        """The Deployment's ReplicaSets after adopting and releasing, oldest first."""
        selector = selector_of(d)
        assert selector is not None
        uid = d["metadata"]["uid"]
        deleting = bool(d["metadata"].get("deletionTimestamp"))
        owned = []
        for rs in self.cluster.store.items(REPLICA_SETS, d["metadata"]["namespace"]):
            ref = controller_ref(rs)
            matches = selector.matches(labels_of(rs))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    owned.append(rs)
                elif not deleting:
                    self._set_owner(rs, None)
            elif matches and not deleting and not rs["metadata"].get("deletionTimestamp"):
                adopted = self._set_owner(rs, d)
                if adopted is not None:
                    owned.append(adopted)
        return sorted(owned, key=lambda rs: (state(rs).created, rs["metadata"]["name"]))

    def _set_owner(self, rs: Obj, owner: Obj | None) -> Obj | None:
        def change(obj: Obj) -> None:
            refs = [
                r for r in obj["metadata"].get("ownerReferences") or [] if not r.get("controller")
            ]
            if owner is not None:
                refs.append(owner_reference(owner, "apps/v1", "Deployment"))
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)

        m = rs["metadata"]
        try:
            return self.cluster.mutate(self._rt("replicasets"), m["namespace"], m["name"], change)
        except APIError as exc:
            log.warning("could not change the owner of replicaset %s: %s", m["name"], exc.message)
            return None

    def _new_and_old(
        self, d: Obj, rs_list: list[Obj], now: float, *, create: bool
    ) -> tuple[Obj | None, list[Obj]]:
        """The new ReplicaSet (found, updated or created) and the old ones
        (getAllReplicaSetsAndSyncRevision)."""
        new = find_new_replica_set(d, rs_list)
        olds = [
            rs for rs in rs_list if new is None or rs["metadata"]["uid"] != new["metadata"]["uid"]
        ]
        revision = max((revision_of(rs) for rs in olds), default=0) + 1
        if new is not None:
            return self._sync_new(d, new, revision, now), olds
        if not create:
            return None, olds
        return self._create_new(d, olds, revision, now), olds

    def _sync_new(self, d: Obj, new: Obj, revision: int, now: float) -> Obj:
        """The new ReplicaSet's annotations and minReadySeconds, the Deployment's revision."""
        spec = as_dict(d.get("spec"))
        annotations = dict(as_dict(new["metadata"].get("annotations")))
        desired = conditions.desired_replicas(d)
        changed = set_new_annotations(
            d,
            annotations,
            revision,
            True,
            desired,
            desired + max_surge(RolloutStrategy.of(d), desired),
        )
        min_ready = int(spec.get("minReadySeconds") or 0)
        if changed or int(as_dict(new.get("spec")).get("minReadySeconds") or 0) != min_ready:

            def change(obj: Obj) -> None:
                obj["metadata"]["annotations"] = annotations
                obj["spec"]["minReadySeconds"] = min_ready
                if not min_ready:
                    obj["spec"].pop("minReadySeconds")

            m = new["metadata"]
            try:
                updated = self.cluster.mutate(
                    self._rt("replicasets"), m["namespace"], m["name"], change
                )
            except APIError as exc:
                log.warning("could not update replicaset %s: %s", m["name"], exc.message)
                return new
            return updated if updated is not None else new
        d["metadata"].setdefault("annotations", {})[REVISION] = annotations.get(
            REVISION, str(revision)
        )
        if conditions.get_condition(d["status"], conditions.PROGRESSING) is None:
            message = f'Found new replica set "{new["metadata"]["name"]}"'
            set_progressing(d, "True", conditions.FOUND_NEW_RS, message, now)
        return new

    def _create_new(self, d: Obj, olds: list[Obj], revision: int, now: float) -> Obj | None:
        strategy = RolloutStrategy.of(d)
        desired = conditions.desired_replicas(d)
        collisions = int(d["status"].get("collisionCount") or 0)
        manifest = new_replica_set(d, 0, collisions)
        empty = ReplicaSetState(manifest["metadata"]["name"], 0)
        size = new_replicas(strategy, desired, [*(state(rs) for rs in olds), empty], empty)
        manifest["spec"]["replicas"] = size
        annotations: dict[str, str] = {}
        set_new_annotations(
            d, annotations, revision, False, desired, desired + max_surge(strategy, desired)
        )
        manifest["metadata"]["annotations"] = annotations
        name = manifest["metadata"]["name"]
        try:
            created = self.cluster.create(
                self._rt("replicasets"), d["metadata"]["namespace"], manifest, Ctx(system=True)
            )
        except APIError as exc:
            if exc.code == 409:
                return self._on_collision(d, manifest)
            message = f'Failed to create new replica set "{name}": {exc.message}'
            set_progressing(d, "False", CREATE_FAILED, message, now)
            self.events.record(d, WARNING, CREATE_FAILED, message)
            return None
        if size > 0:
            self.events.record(
                d, NORMAL, "ScalingReplicaSet", f"Scaled up replica set {name} from 0 to {size}"
            )
        d["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
        set_progressing(
            d, "True", conditions.NEW_RS_CREATED, f'Created new replica set "{name}"', now
        )
        return created

    def _on_collision(self, d: Obj, manifest: Obj) -> Obj | None:
        """A ReplicaSet of that name exists: ours with this template, or a hash collision."""
        m = manifest["metadata"]
        existing = self.cluster.store.get(REPLICA_SETS, m["namespace"], m["name"])
        if existing is not None:
            ref = controller_ref(existing)
            ours = ref is not None and ref.get("uid") == d["metadata"]["uid"]
            same = equal_ignore_hash(
                as_dict(existing.get("spec")).get("template"),
                as_dict(d.get("spec")).get("template"),
            )
            if ours and same:
                return existing
        # Another template hashed to this name: the next hash takes the collision count.
        d["status"]["collisionCount"] = int(d["status"].get("collisionCount") or 0) + 1
        return None

    def _old_pods_running(self, d: Obj, olds: list[Obj]) -> bool:
        """Whether a pod of an old ReplicaSet still runs (oldPodsRunning, for Recreate)."""
        if any(state(rs).current > 0 for rs in olds):
            return True
        old_uids = {rs["metadata"]["uid"] for rs in olds}
        selector = selector_of(d)
        assert selector is not None
        for pod in self.cluster.store.items(PODS, d["metadata"]["namespace"]):
            owner = (controller_ref(pod) or {}).get("uid")
            if owner not in old_uids or not selector.matches(labels_of(pod)):
                continue
            if as_dict(pod.get("status")).get("phase") not in ("Succeeded", "Failed"):
                return True
        return False

    def _apply(self, d: Obj, rs_list: list[Obj], scales: list[Scale]) -> bool:
        """Scale the ReplicaSets (refreshing their replica annotations); True when a
        size changed."""
        by_name = {rs["metadata"]["name"]: rs for rs in rs_list}
        strategy = RolloutStrategy.of(d)
        desired = conditions.desired_replicas(d)
        ceiling = desired + max_surge(strategy, desired)
        scaled = False
        for scale in scales:
            rs = by_name.get(scale.name)
            if rs is None:
                continue
            before = int(as_dict(rs.get("spec")).get("replicas", 1) or 0)
            annotations = dict(as_dict(rs["metadata"].get("annotations")))
            if (
                not set_replicas_annotations(annotations, desired, ceiling)
                and before == scale.replicas
            ):
                continue

            def change(
                obj: Obj, size: int = scale.replicas, notes: dict[str, str] = annotations
            ) -> None:
                obj["spec"]["replicas"] = size
                obj["metadata"]["annotations"] = notes

            m = rs["metadata"]
            try:
                self.cluster.mutate(self._rt("replicasets"), m["namespace"], m["name"], change)
            except APIError as exc:
                log.warning("could not scale replicaset %s: %s", m["name"], exc.message)
                continue
            if before != scale.replicas:
                scaled = True
                way = "up" if scale.replicas > before else "down"
                self.events.record(
                    d, NORMAL, "ScalingReplicaSet",
                    f"Scaled {way} replica set {m['name']} from {before} to {scale.replicas}",
                )  # fmt: skip
        return scaled

    def _clean_history(self, d: Obj, olds: list[Obj]) -> None:
        limit = as_dict(d.get("spec")).get("revisionHistoryLimit")
        if not isinstance(limit, int):
            return
        by_name = {rs["metadata"]["name"]: rs for rs in olds}
        for name in history_to_delete([state(rs) for rs in olds], limit):
            m = by_name[name]["metadata"]
            try:
                self.cluster.delete(
                    self._rt("replicasets"),
                    m["namespace"],
                    name,
                    DeleteOptions(precondition_uid=m["uid"]),
                )
            except APIError as exc:
                if exc.code != 404:
                    log.warning("could not delete old replicaset %s: %s", name, exc.message)

    def _finish(self, stored: Obj, d: Obj, status: Obj) -> None:
        """Write the status and the revision annotation when either changed."""
        annotations = as_dict(d["metadata"].get("annotations"))
        if status == stored.get("status") and annotations == as_dict(
            stored["metadata"].get("annotations")
        ):
            return

        def change(obj: Obj) -> None:
            obj["status"] = status
            if annotations:
                obj["metadata"]["annotations"] = annotations

        m = stored["metadata"]
        try:
            self.cluster.mutate(
                self._rt("deployments"), m["namespace"], m["name"], change, subresource="status"
            )
        except APIError as exc:
            log.warning("could not write the status of deployment %s: %s", m["name"], exc.message)
