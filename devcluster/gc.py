"""The API server's built-in controllers: garbage collection and friends.

- Garbage collection by ownerReferences, as Kubernetes' garbage collector does it:
  * Background: once every owner of a dependent is gone, the dependent is deleted.
    A dependent that still has a live owner only loses its references to the dead ones.
  * Foreground: the owner carries the `foregroundDeletion` finalizer and a
    deletionTimestamp; its dependents are deleted (in the foreground too), and the
    finalizer is removed once no dependent with `blockOwnerDeletion: true` is left.
  * Orphan: the owner carries the `orphan` finalizer; its dependents lose their
    references to it, then the finalizer is removed.
  Owners are looked up by uid; a namespaced owner must be in the dependent's namespace.
- Namespace termination: a namespace being deleted has all its objects deleted; when it
  is empty, the `kubernetes` finalizer goes and the namespace with it.
- CRD clean-up: a CRD being deleted has all its custom resources deleted; when none is
  left, the `customresourcecleanup.apiextensions.k8s.io` finalizer goes, and with the
  CRD, the resource type.
- Scheduling: pods that waited for room on the node are bound once their requests
  fit (devcluster.scheduler, devcluster.scheduling).
- PVC protection: the `kubernetes.io/pvc-protection` finalizer of a claim being deleted
  goes once no running pod uses the claim.
- Event expiry: events last seen more than an hour ago are deleted (kube-apiserver's
  default `--event-ttl`), checked every minute.
- Endpoints: one Endpoints object per service with a selector, named like the service:
  `addresses` are the podIPs of the ready pods matching the selector, the rest
  (running but not ready, or terminating) are `notReadyAddresses`; named target ports
  are resolved per pod. EndpointSlices (discovery.k8s.io/v1, what kubectl 1.33's
  `describe service` reads) are kept the same way: one per service and port mapping,
  labelled `kubernetes.io/service-name`, owned by the service.

Each controller runs as a pass over the store, scheduled on the event loop shortly
after the changes that concern it (never inside a store write).

The controllers see the cluster through `ObjectAPI`, a small protocol, and are built by
whoever builds the server (`devcluster.apiserver.app.create_app`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from devcluster import scheduler, scheduling
from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.resources.crds import CRD_CLEANUP_FINALIZER
from devcluster.resources.registry import Registry
from devcluster.resources.types import ResourceType
from devcluster.store import APIError, GroupResource, Obj, Store, StoreEvent, parse_time
from devcluster.values import as_dict, as_list

log = logging.getLogger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
NAMESPACES: GroupResource = ("", "namespaces")
PODS: GroupResource = ("", "pods")
SERVICES: GroupResource = ("", "services")
ENDPOINTS: GroupResource = ("", "endpoints")
CLAIMS: GroupResource = ("", "persistentvolumeclaims")
NODES: GroupResource = ("", "nodes")
CRDS: GroupResource = ("apiextensions.k8s.io", "customresourcedefinitions")
EVENTS: GroupResource = ("", "events")
EVENT_TTL_SECONDS = 3600.0  # as kube-apiserver's default --event-ttl
EVENT_SWEEP_SECONDS = 60.0
SLICES: GroupResource = ("discovery.k8s.io", "endpointslices")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
MANAGED_BY = "endpoints.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpoint-controller"


class ObjectAPI(Protocol):
    """What the controllers use of the cluster they keep (`devcluster.apiserver.cluster`)."""

    store: Store
    registry: Registry

    def create(self, rt: ResourceType, namespace: str | None, body: Any, ctx: Ctx) -> Obj: ...

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: DeleteOptions
    ) -> tuple[Obj, bool]: ...

    def mutate(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        change: Callable[[Obj], None],
        subresource: str | None = None,
    ) -> Obj | None: ...

    def commit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj: ...


class Controllers:
    """Schedules and runs the passes; `attach()` once, `start()` on the server's loop."""

    def __init__(
        self, cluster: ObjectAPI, delay: float = 0.005, endpoints_interval: float = 0.05
    ) -> None:
        self.cluster = cluster
        self.delay = delay
        self.endpoints_interval = endpoints_interval
        self._endpoints_due = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._where: dict[str, tuple[GroupResource, str, str]] = {}
        self._refs: dict[str, frozenset[str]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._dirty_owners: set[str] = set()
        self._dirty_dependents: set[str] = set()
        self._namespaces = False
        self._crds = False
        self._claims = False
        self._scheduling = False
        self._unbound: set[str] = set()
        self._scheduled_notes: dict[str, str] = {}
        self._endpoints: set[str] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._passes = 0

    def attach(self) -> None:
        store = self.cluster.store
        for gr, obj in store.all_objects():
            m = obj["metadata"]
            self._index(StoreEvent(0, "ADDED", gr, m.get("namespace", ""), m["name"], obj, None))
            if gr == PODS and scheduling.is_unscheduled(obj):
                self._unbound.add(str(m.get("uid") or ""))
            if m.get("deletionTimestamp"):
                self._dirty_owners.add(m["uid"])
        store.add_listener(self.on_event)
        # whatever the snapshot left half-done
        self._namespaces = self._crds = self._claims = True
        self._scheduling = bool(self._unbound)
        self._endpoints.update(o["metadata"]["name"] for o in self.cluster.store.items(NAMESPACES))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._schedule()
        self._expiry = self._loop.call_later(EVENT_SWEEP_SECONDS, self._sweep_events)

    async def stop(self) -> None:
        self._running = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # ---- scheduling

    def on_event(self, event: StoreEvent) -> None:
        meta = as_dict(event.obj.get("metadata"))
        deleting = event.type == "DELETED" or bool(meta.get("deletionTimestamp"))
        self._index(event)
        if deleting and event.gr == NAMESPACES:
            self._namespaces = True
        if deleting and event.gr == CRDS:
            self._crds = True
        if event.gr == CLAIMS and deleting:
            self._claims = True
        if event.gr == PODS:
            # Pods waiting for room, by uid: only while there are some do a pod's end or
            # termination (room freed) call for a scheduling pass.
            phase = as_dict(event.obj.get("status")).get("phase")
            uid = str(meta.get("uid") or "")
            if event.type != "DELETED" and scheduling.is_unscheduled(event.obj):
                self._unbound.add(uid)
            else:
                self._unbound.discard(uid)
            self._scheduling = self._scheduling or bool(
                self._unbound
                and (deleting or phase in ("Succeeded", "Failed") or uid in self._unbound)
            )
            self._claims = (
                self._claims
                or deleting
                or as_dict(event.obj.get("status")).get("phase") in ("Succeeded", "Failed")
            )
        if event.gr == NODES:
            self._scheduling = self._scheduling or bool(self._unbound)
        if event.gr in (PODS, SERVICES, ENDPOINTS, SLICES):
            self._endpoints.add(event.namespace)
        if event.namespace and self._namespace_terminating(event.namespace):
            self._namespaces = True
        crd_name = self._crd_of(event.gr)
        if crd_name is not None and event.type == "DELETED":
            self._crds = True
        self._schedule()

    def _namespace_terminating(self, namespace: str) -> bool:
        ns = self.cluster.store.get(NAMESPACES, "", namespace)
        return bool(ns and ns["metadata"].get("deletionTimestamp"))

    def _crd_of(self, gr: GroupResource) -> str | None:
        rt = self.cluster.registry.storage_type(gr)
        return rt.crd if rt is not None else None

    def _schedule(self) -> None:
        if not self._running or self._loop is None or self._handle is not None:
            return
        if self._pending():
            delay = self.delay
        elif self._endpoints:
            delay = max(self.delay, self._endpoints_due - time.monotonic())
        else:
            return
        try:
            self._handle = self._loop.call_later(delay, self._run)
        except RuntimeError:  # loop closed
            self._handle = None

    def _pending(self, *, endpoints: bool = False) -> bool:
        """Whether a pass is due now (Endpoints only when `endpoints`)."""
        return bool(
            self._dirty_owners
            or self._dirty_dependents
            or self._namespaces
            or self._crds
            or self._claims
            or self._scheduling
            or (endpoints and self._endpoints)
        )

    def _run(self) -> None:
        self._handle = None
        try:
            self.run_pending(endpoints=time.monotonic() >= self._endpoints_due)
        except Exception:
            log.exception("a controller pass failed")
        self._schedule()

    def run_pending(self, max_rounds: int = 50, *, endpoints: bool = True) -> None:
        """Run the passes until nothing is pending (also usable without a loop).

        Endpoints passes are throttled to one per `endpoints_interval` by the scheduler:
        they scan every pod of a namespace.
        """
        for _ in range(max_rounds):
            if not self._pending(endpoints=endpoints):
                return
            self._passes += 1
            if self._namespaces:
                self._namespaces = False
                self.namespace_pass()
            if self._crds:
                self._crds = False
                self.crd_pass()
            if self._dirty_owners or self._dirty_dependents:
                self.gc_pass()
            if self._claims:
                self._claims = False
                self.claim_pass()
            if self._scheduling:
                self._scheduling = False
                scheduler.schedule_pass(self.cluster, self._scheduled_notes)
            if self._endpoints and endpoints:
                pending, self._endpoints = self._endpoints, set()
                for namespace in sorted(pending):
                    self.endpoints_pass(namespace)
                self._endpoints_due = time.monotonic() + self.endpoints_interval
                endpoints = False

    # ---- event expiry

    def _sweep_events(self) -> None:
        try:
            self.expire_events()
        except Exception:
            log.exception("expiring events failed")
        if self._running and self._loop is not None:
            self._expiry = self._loop.call_later(EVENT_SWEEP_SECONDS, self._sweep_events)

    def expire_events(self, ttl: float = EVENT_TTL_SECONDS) -> int:
        """Delete events last seen more than `ttl` seconds ago (kube-apiserver's --event-ttl)."""
        store = self.cluster.store
        horizon = time.time() - ttl
        expired = 0
        for event in store.items(EVENTS):
            stamps = [
                event.get("lastTimestamp"),
                event.get("eventTime"),
                as_dict(event.get("series")).get("lastObservedTime"),
                event["metadata"].get("creationTimestamp"),
            ]
            moments = [t for t in map(_timestamp, stamps) if t is not None]
            if moments and max(moments) < horizon:
                m = event["metadata"]
                if store.remove(EVENTS, m.get("namespace", ""), m["name"]) is not None:
                    expired += 1
        return expired

    # ---- helpers

    def _type(self, gr: GroupResource) -> ResourceType | None:
        return self.cluster.registry.storage_type(gr)

    def _delete(self, gr: GroupResource, obj: Obj, policy: str | None = None) -> None:
        rt = self._type(gr)
        if rt is None:
            return
        m = obj["metadata"]
        try:
            self.cluster.delete(
                rt,
                m.get("namespace") or None,
                m["name"],
                DeleteOptions(propagation=policy, precondition_uid=m.get("uid")),
            )
        except APIError as exc:
            if exc.code not in (404, 409):
                log.warning("could not delete %s %s: %s", gr, m.get("name"), exc.message)

    def _mutate(self, gr: GroupResource, obj: Obj, change: Any) -> None:
        rt = self._type(gr)
        if rt is None:
            return
        m = obj["metadata"]
        try:
            self.cluster.mutate(rt, m.get("namespace", ""), m["name"], change)
        except APIError as exc:
            log.warning("could not update %s %s: %s", gr, m.get("name"), exc.message)

    def _remove_finalizer(self, gr: GroupResource, obj: Obj, finalizer: str) -> None:
        def change(o: Obj) -> None:
            m = o["metadata"]
            m["finalizers"] = [f for f in as_list(m.get("finalizers")) if f != finalizer]
            if not m["finalizers"]:
                m.pop("finalizers")

        self._mutate(gr, obj, change)

    # ---- garbage collection

    def _index(self, event: StoreEvent) -> None:
        """Keep the uid and owner indexes and note what the collector must look at."""
        meta = as_dict(event.obj.get("metadata"))
        uid = str(meta.get("uid") or "")
        if not uid:
            return
        before = self._refs.get(uid, frozenset())
        if event.type == "DELETED":
            self._where.pop(uid, None)
            self._refs.pop(uid, None)
            refs: frozenset[str] = frozenset()
            self._dirty_dependents.update(self._dependents.pop(uid, set()))
        else:
            self._where[uid] = (event.gr, event.namespace, event.name)
            refs = frozenset(
                str(as_dict(r).get("uid")) for r in as_list(meta.get("ownerReferences"))
            )
            self._refs[uid] = refs
            if refs and (event.type == "ADDED" or refs != before):
                self._dirty_dependents.add(uid)
            finalizers = as_list(meta.get("finalizers"))
            if meta.get("deletionTimestamp") and (ORPHAN in finalizers or FOREGROUND in finalizers):
                self._dirty_owners.add(uid)
        for owner in before - refs:
            dependents = self._dependents.get(owner)
            if dependents is not None:
                dependents.discard(uid)
                if not dependents:
                    del self._dependents[owner]
        for owner in refs - before:
            self._dependents.setdefault(owner, set()).add(uid)
        # an owner waiting in the foreground looks again when a dependent changes
        self._dirty_owners.update(before | refs)

    def _lookup(self, uid: str) -> tuple[GroupResource, Obj] | None:
        where = self._where.get(uid)
        if where is None:
            return None
        gr, namespace, name = where
        obj = self.cluster.store.get(gr, namespace, name)
        if obj is None or obj["metadata"].get("uid") != uid:
            return None
        return gr, obj

    def _owner_of(self, dependent: Obj, uid: str) -> tuple[GroupResource, Obj] | None:
        found = self._lookup(uid)
        if found is None:
            return None
        gr, owner = found
        rt = self._type(gr)
        same = owner["metadata"].get("namespace") == dependent["metadata"].get("namespace")
        if (rt is None or rt.namespaced) and not same:
            return None  # a namespaced owner must live in the dependent's namespace
        return found

    @staticmethod
    def _waiting(owner: Obj) -> bool:
        m = owner["metadata"]
        return bool(m.get("deletionTimestamp")) and FOREGROUND in as_list(m.get("finalizers"))

    def gc_pass(self) -> None:
        owners, self._dirty_owners = self._dirty_owners, set()
        dependents, self._dirty_dependents = self._dirty_dependents, set()
        for uid in sorted(owners):
            found = self._lookup(uid)
            if found is not None and found[1]["metadata"].get("deletionTimestamp"):
                self._process_owner(*found)
        for uid in sorted(dependents):
            found = self._lookup(uid)
            if found is not None:
                self._process_dependent(*found)

    def _dependents_of(self, uid: str) -> list[tuple[GroupResource, Obj]]:
        result = []
        for dependent_uid in sorted(self._dependents.get(uid, ())):
            found = self._lookup(dependent_uid)
            if found is not None:
                result.append(found)
        return result

    def _process_owner(self, gr: GroupResource, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        finalizers = as_list(owner["metadata"].get("finalizers"))
        if ORPHAN in finalizers:
            for dgr, dependent in self._dependents_of(uid):
                self._drop_refs(dgr, dependent, {uid})
            self._remove_finalizer(gr, owner, ORPHAN)
            return
        if FOREGROUND not in finalizers:
            return
        blocking = False
        for dgr, dependent in self._dependents_of(uid):
            refs = [
                r
                for r in as_list(dependent["metadata"].get("ownerReferences"))
                if as_dict(r).get("uid") == uid
            ]
            if any(as_dict(r).get("blockOwnerDeletion") for r in refs):
                blocking = True
            if dependent["metadata"].get("deletionTimestamp"):
                continue
            if self._has_solid_owner(dependent, uid):
                self._drop_refs(dgr, dependent, {uid})
            else:
                self._delete(dgr, dependent, "Foreground")
        if not blocking or not any(self._blocks(d, uid) for _, d in self._dependents_of(uid)):
            self._remove_finalizer(gr, owner, FOREGROUND)

    def _process_dependent(self, gr: GroupResource, obj: Obj) -> None:
        m = obj["metadata"]
        refs = as_list(m.get("ownerReferences"))
        if not refs or m.get("deletionTimestamp"):
            return
        solid: list[str] = []
        dangling: set[str] = set()
        waiting: list[str] = []
        for ref in refs:
            uid = str(as_dict(ref).get("uid"))
            found = self._owner_of(obj, uid)
            if found is None:
                dangling.add(uid)
            elif self._waiting(found[1]):
                waiting.append(uid)
            else:
                solid.append(uid)
        if solid:
            if dangling:
                self._drop_refs(gr, obj, dangling)
            return
        if waiting:
            self._dirty_owners.update(waiting)  # the owner's foreground pass deletes it
            return
        if dangling:
            self._delete(gr, obj, None)

    @staticmethod
    def _blocks(obj: Obj | None, uid: str) -> bool:
        if obj is None:
            return False
        return any(
            as_dict(r).get("uid") == uid and as_dict(r).get("blockOwnerDeletion")
            for r in as_list(obj["metadata"].get("ownerReferences"))
        )

    def _has_solid_owner(self, dependent: Obj, dying_uid: str) -> bool:
        for ref in as_list(dependent["metadata"].get("ownerReferences")):
            uid = str(as_dict(ref).get("uid"))
            if uid == dying_uid:
                continue
            found = self._owner_of(dependent, uid)
            if found is not None and not self._waiting(found[1]):
                return True
        return False

    def _drop_refs(self, gr: GroupResource, obj: Obj, uids: set[str]) -> None:
        def change(o: Obj) -> None:
            refs = [
                r
                for r in as_list(o["metadata"].get("ownerReferences"))
                if as_dict(r).get("uid") not in uids
            ]
            if refs:
                o["metadata"]["ownerReferences"] = refs
            else:
                o["metadata"].pop("ownerReferences", None)

        self._mutate(gr, obj, change)

    # ---- namespaces

    def namespace_pass(self) -> None:
        store = self.cluster.store
        for ns in store.items(NAMESPACES):
            m = ns["metadata"]
            if not m.get("deletionTimestamp"):
                continue
            name = m["name"]
            remaining = 0
            for gr in store.resources():
                rt = self._type(gr)
                if rt is None or not rt.namespaced:
                    continue
                for obj in store.items(gr, name):
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete(gr, obj, "Background")
            still = sum(
                store.count(gr, name)
                for gr in store.resources()
                if (rt := self._type(gr)) is not None and rt.namespaced
            )
            if still == 0 and "kubernetes" in as_list(as_dict(ns.get("spec")).get("finalizers")):
                self._finalize_namespace(ns)
            elif still:
                self._namespaces = True  # look again after the next changes

    def _finalize_namespace(self, ns: Obj) -> None:
        store = self.cluster.store
        rt = self._type(NAMESPACES)
        assert rt is not None
        current = store.get(NAMESPACES, "", ns["metadata"]["name"])
        if current is None:
            return
        obj = dict(current)
        obj["spec"] = {
            **as_dict(current.get("spec")),
            "finalizers": [
                f
                for f in as_list(as_dict(current.get("spec")).get("finalizers"))
                if f != "kubernetes"
            ],
        }
        if not obj["spec"]["finalizers"]:
            obj["spec"].pop("finalizers")
        self.cluster.commit(rt, obj, current)

    # ---- CRDs

    def crd_pass(self) -> None:
        store = self.cluster.store
        for crd in store.items(CRDS):
            m = crd["metadata"]
            if not m.get("deletionTimestamp"):
                continue
            gr = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
            for obj in store.items(gr):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(gr, obj, "Background")
            if store.count(gr) == 0:
                if CRD_CLEANUP_FINALIZER in as_list(m.get("finalizers")):
                    self._remove_finalizer(CRDS, crd, CRD_CLEANUP_FINALIZER)
            else:
                self._crds = True

    # ---- claims

    def claim_pass(self) -> None:
        store = self.cluster.store
        for claim in store.items(CLAIMS):
            m = claim["metadata"]
            if not m.get("deletionTimestamp") or PVC_PROTECTION not in as_list(m.get("finalizers")):
                continue
            namespace, name = m.get("namespace", ""), m["name"]
            in_use = False
            for pod in store.items(PODS, namespace):
                if as_dict(pod.get("status")).get("phase") in ("Succeeded", "Failed"):
                    continue
                for volume in as_list(as_dict(pod.get("spec")).get("volumes")):
                    source = as_dict(as_dict(volume).get("persistentVolumeClaim"))
                    if source.get("claimName") == name:
                        in_use = True
            if not in_use:
                self._remove_finalizer(CLAIMS, claim, PVC_PROTECTION)

    # ---- endpoints

    def endpoints_pass(self, namespace: str) -> None:
        store = self.cluster.store
        rt = self._type(ENDPOINTS)
        if rt is None:
            return
        from devcluster import selectors

        services = {s["metadata"]["name"]: s for s in store.items(SERVICES, namespace)}
        selecting = any(as_dict(as_dict(s.get("spec")).get("selector")) for s in services.values())
        pods = store.items(PODS, namespace) if selecting else []
        # Pods by each of their labels: a Service's selector is a map of equalities, so
        # its pods are among those of any one pair. Without this a pass costs services x
        # pods label matches (minutes of CPU at a few hundred of each).
        by_label: dict[tuple[str, str], list[Obj]] = {}
        for pod in pods:
            for key, value in as_dict(pod["metadata"].get("labels")).items():
                by_label.setdefault((key, str(value)), []).append(pod)
        for service in services.values():
            spec = as_dict(service.get("spec"))
            selector = as_dict(spec.get("selector"))
            if not selector or spec.get("type") == "ExternalName":
                continue
            try:
                match = selectors.selector_from_map(selector)
            except Exception:
                continue
            candidates = min(
                (by_label.get((str(k), str(v)), []) for k, v in selector.items()), key=len
            )
            matching = [
                p for p in candidates if match.matches(as_dict(p["metadata"].get("labels")))
            ]
            subsets = endpoint_subsets(service, matching)
            self._write_endpoints(rt, service, subsets)
            self._write_slices(service, endpoint_slices(service, matching))
        ns = store.get(NAMESPACES, "", namespace)
        for piece in store.items(SLICES, namespace):
            m = piece["metadata"]
            labels = as_dict(m.get("labels"))
            if labels.get(SLICE_MANAGED_BY) != SLICE_CONTROLLER:
                continue
            owner = services.get(str(labels.get(SERVICE_NAME_LABEL)))
            orphaned = owner is None or not as_dict(as_dict(owner.get("spec")).get("selector"))
            if orphaned and not m.get("deletionTimestamp") and ns is not None:
                self._delete(SLICES, piece)
        for endpoints in store.items(ENDPOINTS, namespace):
            m = endpoints["metadata"]
            if as_dict(m.get("labels")).get(MANAGED_BY) != CONTROLLER_NAME:
                continue
            owner = services.get(m["name"])
            orphaned = owner is None or not as_dict(as_dict(owner.get("spec")).get("selector"))
            if orphaned and not m.get("deletionTimestamp") and ns is not None:
                self._delete(ENDPOINTS, endpoints)

    def _write_slices(self, service: Obj, slices: dict[str, Obj]) -> None:
        store = self.cluster.store
        rt = self._type(SLICES)
        if rt is None:
            return
        sm = service["metadata"]
        namespace = sm["namespace"]
        for name, body in slices.items():
            current = store.get(SLICES, namespace, name)
            if current is None:
                if sm.get("deletionTimestamp"):
                    continue
                try:
                    self.cluster.create(rt, namespace, body, Ctx(system=True))
                except APIError as exc:
                    if exc.code not in (403, 404, 409):
                        log.warning(
                            "could not create endpointslice %s/%s: %s", namespace, name, exc
                        )
                continue
            if all(current.get(k) == body.get(k) for k in ("endpoints", "ports", "addressType")):
                continue
            updated = {**current, "endpoints": body["endpoints"], "ports": body["ports"]}
            updated["metadata"] = dict(current["metadata"])
            updated["metadata"]["generation"] = int(current["metadata"].get("generation") or 0) + 1
            store.put(SLICES, updated)
        for piece in store.items(SLICES, namespace):
            labels = as_dict(piece["metadata"].get("labels"))
            if (
                labels.get(SERVICE_NAME_LABEL) == sm["name"]
                and labels.get(SLICE_MANAGED_BY) == SLICE_CONTROLLER
                and piece["metadata"]["name"] not in slices
            ):
                self._delete(SLICES, piece)

    def _write_endpoints(self, rt: ResourceType, service: Obj, subsets: list[Obj]) -> None:
        store = self.cluster.store
        sm = service["metadata"]
        namespace, name = sm["namespace"], sm["name"]
        labels = dict(as_dict(sm.get("labels")))
        labels[MANAGED_BY] = CONTROLLER_NAME
        current = store.get(ENDPOINTS, namespace, name)
        if current is None:
            if sm.get("deletionTimestamp"):
                return
            body: Obj = {"metadata": {"name": name, "namespace": namespace, "labels": labels}}
            if subsets:
                body["subsets"] = subsets
            try:
                self.cluster.create(rt, namespace, body, Ctx(system=True))
            except APIError as exc:
                if exc.code not in (403, 404, 409):
                    log.warning("could not create endpoints %s/%s: %s", namespace, name, exc)
            return
        if (
            current.get("subsets", []) == subsets
            and as_dict(current["metadata"].get("labels")) == labels
        ):
            return

        # a direct write: Endpoints have no strategy, and they can be large
        updated = dict(current)
        updated["metadata"] = {**current["metadata"], "labels": labels}
        updated["metadata"]["generation"] = int(current["metadata"].get("generation") or 0) + 1
        if subsets:
            updated["subsets"] = subsets
        else:
            updated.pop("subsets", None)
        store.put(ENDPOINTS, updated)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    moment = parse_time(value)
    return moment.timestamp() if moment is not None else None


def _slice_name(service: str, key: tuple[Any, ...]) -> str:
    digest = hashlib.sha1(repr((service, key)).encode()).digest()
    suffix = "".join(NAME_CHARS[b % len(NAME_CHARS)] for b in digest[:5])
    return f"{service[:57]}-{suffix}"


def endpoint_slices(service: Obj, pods: list[Obj]) -> dict[str, Obj]:
    """discovery.k8s.io/v1 EndpointSlices for a service, one per distinct port mapping."""
    spec = as_dict(service.get("spec"))
    sm = service["metadata"]
    service_ports = [as_dict(p) for p in as_list(spec.get("ports"))]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for pod in pods:
        status = as_dict(pod.get("status"))
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for sp in service_ports:
            number = resolve_target_port(sp, pod)
            if number is None:
                continue
            ports.append(
                {"name": sp.get("name", ""), "port": number, "protocol": sp.get("protocol", "TCP")}
            )
        key = tuple(sorted((p["name"], p["port"], p["protocol"]) for p in ports))
        group = groups.setdefault(key, {"ports": ports, "endpoints": []})
        m = pod["metadata"]
        terminating = bool(m.get("deletionTimestamp"))
        ready = pod_ready(pod)
        endpoint: Obj = {
            "addresses": [ip],
            "conditions": {
                "ready": (ready and not terminating) or bool(spec.get("publishNotReadyAddresses")),
                "serving": ready,
                "terminating": terminating,
            },
            "targetRef": {
                "kind": "Pod",
                "namespace": m.get("namespace"),
                "name": m["name"],
                "uid": m["uid"],
            },
        }
        node = as_dict(pod.get("spec")).get("nodeName")
        if node:
            endpoint["nodeName"] = node
        group["endpoints"].append(endpoint)
    if not groups:
        groups[()] = {"ports": [], "endpoints": []}
    labels = dict(as_dict(sm.get("labels")))
    labels[SERVICE_NAME_LABEL] = sm["name"]
    labels[SLICE_MANAGED_BY] = SLICE_CONTROLLER
    owner = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": sm["name"],
        "uid": sm["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    result = {}
    for key, group in sorted(groups.items()):
        name = _slice_name(sm["name"], key)
        result[name] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": sm.get("namespace"),
                "labels": labels,
                "ownerReferences": [owner],
            },
            "addressType": "IPv4",
            "endpoints": sorted(group["endpoints"], key=lambda e: e["addresses"][0]),
            "ports": group["ports"],
        }
    return result


def pod_ready(pod: Obj) -> bool:
    for condition in as_list(as_dict(pod.get("status")).get("conditions")):
        if as_dict(condition).get("type") == "Ready":
            return as_dict(condition).get("status") == "True"
    return False


def resolve_target_port(service_port: Obj, pod: Obj) -> int | None:
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str):
        if target.isdigit():
            return int(target)
        for container in as_list(as_dict(pod.get("spec")).get("containers")):
            for port in as_list(as_dict(container).get("ports")):
                if as_dict(port).get("name") == target:
                    value = as_dict(port).get("containerPort")
                    return value if isinstance(value, int) else None
    return None


def endpoint_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """Endpoints subsets for a service over the pods its selector matches."""
    spec = as_dict(service.get("spec"))
    service_ports = [as_dict(p) for p in as_list(spec.get("ports"))]
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for pod in pods:
        status = as_dict(pod.get("status"))
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        m = pod["metadata"]
        ports = []
        for sp in service_ports:
            number = resolve_target_port(sp, pod)
            if number is None:
                continue
            entry = {"port": number, "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                entry["name"] = sp["name"]
            ports.append(entry)
        if service_ports and not ports:
            continue
        key = tuple(sorted((p.get("name", ""), p["port"], p["protocol"]) for p in ports))
        group = groups.setdefault(key, {"ports": ports, "ready": [], "not_ready": []})
        address = {
            "ip": ip,
            "nodeName": as_dict(pod.get("spec")).get("nodeName"),
            "targetRef": {
                "kind": "Pod",
                "namespace": m.get("namespace"),
                "name": m["name"],
                "uid": m["uid"],
            },
        }
        if not address["nodeName"]:
            address.pop("nodeName")
        ready = (pod_ready(pod) and not m.get("deletionTimestamp")) or publish_not_ready
        group["ready" if ready else "not_ready"].append(address)
    subsets = []
    for _key, group in sorted(groups.items()):
        subset: Obj = {}
        if group["ready"]:
            subset["addresses"] = sorted(group["ready"], key=lambda a: a["ip"])
        if group["not_ready"]:
            subset["notReadyAddresses"] = sorted(group["not_ready"], key=lambda a: a["ip"])
        if group["ports"]:
            subset["ports"] = group["ports"]
        subsets.append(subset)
    return subsets
