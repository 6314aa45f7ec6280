"""`Cluster`: the object semantics over the store (create, update, patch, apply,
delete with finalizers and grace periods, the scale subresource); no HTTP here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster import DEFAULT_KUBERNETES_VERSION, paths, selectors
from devcluster import patch as patching
from devcluster.apiserver import managedfields
from devcluster.apiserver.codec import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_PATCH,
    apply_patch,
    dumps,
    parse_json,
    parse_yaml,
    unsupported_media_type,
)
from devcluster.apiserver.node import node_object
from devcluster.apiserver.objects import (
    check_kind,
    check_metadata,
    comparable,
    generation_view,
    matcher,
)
from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.auth import bootstrap
from devcluster.resources.fields import Cause, check_name, forbidden, required
from devcluster.resources.jsonpath import json_path_field, json_path_get, json_path_set
from devcluster.resources.registry import Registry
from devcluster.resources.times import normalize_times
from devcluster.resources.types import IMMORTAL_NAMESPACES, INITIAL_NAMESPACES, Env, ResourceType
from devcluster.scheduling import DEFAULT_NODE_CPU, DEFAULT_NODE_MEMORY
from devcluster.store import APIError, Obj, Store, bad_request, now, rfc3339
from devcluster.values import as_dict, as_list

log = logging.getLogger(__name__)

DEFAULT_NODE = "devcluster"
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
DELETE_POLICIES = ("Foreground", "Background", "Orphan")
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
NAMESPACE_FINALIZER = "kubernetes"
CREATE_ON_UPDATE = frozenset({("", "events"), ("", "endpoints"), ("coordination.k8s.io", "leases")})


class Cluster:
    """Object semantics over the store; no HTTP here."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        persist: bool = False,
        node_name: str = DEFAULT_NODE,
        simulate: bool = False,
        kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
        history_size: int = 20000,
        snapshot_delay: float = 0.3,
        node_cpu: str = DEFAULT_NODE_CPU,
        node_memory: str = DEFAULT_NODE_MEMORY,
    ) -> None:
        self.state_dir = state_dir
        snapshot = paths.snapshot_file(state_dir) if (persist and state_dir is not None) else None
        self.store = Store(
            history_size=history_size, snapshot_path=snapshot, snapshot_delay=snapshot_delay
        )
        self.registry = Registry()
        self.node_name = node_name
        self.simulate = simulate
        self.kubernetes_version = kubernetes_version
        self.node_cpu = node_cpu
        self.node_memory = node_memory
        #: Set when the cluster serves HTTPS with its own CA (kube-root-ca.crt is published).
        self.root_ca = False
        self._bootstrap()

    # ---- start-up

    def _bootstrap(self) -> None:
        loaded = self.store.load()
        if loaded:
            log.info("loaded %d objects from %s", loaded, self.store.snapshot_path)
        for crd in self.store.items(("apiextensions.k8s.io", "customresourcedefinitions")):
            try:
                self.registry.register_crd(crd)
            except Exception:
                log.exception("could not serve the stored CRD %s", crd["metadata"].get("name"))
        ctx = Ctx(system=True)
        ns_type = self.rt("", "v1", "namespaces")
        for name in INITIAL_NAMESPACES:
            if self.store.get(ns_type.gr, "", name) is None:
                self.create(ns_type, None, {"metadata": {"name": name}}, ctx)
        for namespace in self.store.items(ns_type.gr):
            self.ensure_service_account(namespace["metadata"]["name"])
        self.ensure_bootstrap_policy()
        node_type = self.rt("", "v1", "nodes")
        node = node_object(
            self.node_name, self.kubernetes_version, cpu=self.node_cpu, memory=self.node_memory
        )
        if self.store.get(node_type.gr, "", self.node_name) is None:
            self.create(node_type, None, node, ctx)
        else:  # a restart: this process's versions and a fresh heartbeat

            def refresh(obj: Obj) -> None:
                obj["status"] = node["status"]

            self.mutate(node_type, "", self.node_name, refresh, subresource="status")

    def ensure_bootstrap_policy(self) -> None:
        """Create the bootstrap ClusterRoles and bindings that are missing (as
        kube-apiserver's RBAC post-start hook does; existing ones are left alone)."""
        ctx = Ctx(system=True)
        for plural, objects in (
            ("clusterroles", bootstrap.cluster_roles()),
            ("clusterrolebindings", bootstrap.cluster_role_bindings()),
        ):
            rt = self.rt("rbac.authorization.k8s.io", "v1", plural)
            for obj in objects:
                if self.store.get(rt.gr, "", obj["metadata"]["name"]) is None:
                    self.create(rt, None, obj, ctx)

    def ensure_service_account(self, namespace: str) -> None:
        sa_type = self.rt("", "v1", "serviceaccounts")
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.store.get(sa_type.gr, namespace, "default") is None:
            self.create(sa_type, namespace, {"metadata": {"name": "default"}}, Ctx(system=True))

    # ---- lookups

    def rt(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.registry.get(group, version, plural)
        if rt is None:
            raise KeyError((group, version, plural))
        return rt

    def env(self, ctx: Ctx) -> Env:
        return Env(
            store=self.store,
            registry=self.registry,
            node_name=self.node_name,
            warnings=ctx.warnings,
            field_validation="Ignore" if ctx.system else ctx.field_validation,
            root_ca=self.root_ca,
        )

    def _stored(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.gr, namespace, name)
        if obj is None:
            raise rt.not_found(name)
        return obj

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return rt.present(self._stored(rt, namespace or "", name))

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], Obj]:
        """Matching objects (presented) and the list metadata."""
        matches = matcher(rt, label_selector, field_selector)
        list_rv = self.store.resource_version
        start: tuple[str, str] | None = None
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start = (str(token["start"][0]), str(token["start"][1]))
                list_rv = int(token["rv"])
            except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
        items: list[Obj] = []
        more = 0
        last: tuple[str, str] | None = None
        for obj in self.store.items(rt.gr, namespace):
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if start is not None and key <= start:
                continue
            presented = rt.present(obj)
            if not matches(presented):
                continue
            if limit and len(items) >= limit:
                more += 1
                continue
            items.append(presented)
            last = key
        list_meta: Obj = {"resourceVersion": str(list_rv)}
        if more and last is not None:
            token_data = {"rv": list_rv, "start": list(last)}
            list_meta["continue"] = base64.urlsafe_b64encode(dumps(token_data)).decode()
            list_meta["remainingItemCount"] = more
        return items, list_meta

    # ---- metadata helpers

    def _namespace_for(self, rt: ResourceType, namespace: str | None, obj: Obj, name: str) -> str:
        m = obj["metadata"]
        if not rt.namespaced:
            m.pop("namespace", None)
            return ""
        body_ns = m.get("namespace")
        if namespace is None:
            raise bad_request("the server could not find the requested resource")
        if body_ns and body_ns != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        m["namespace"] = namespace
        return namespace

    def _check_namespace_open(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise APIError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise APIError(
                403,
                "Forbidden",
                f'{rt.qualified} "{name}" is forbidden: unable to create new content in '
                f"namespace {namespace} because it is being terminated",
                {
                    "name": name,
                    "group": rt.group,
                    "kind": rt.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    # ---- create

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        ctx: Ctx,
        *,
        managed: list[Obj] | None = None,
    ) -> Obj:
        """POST; `managed` is the managedFields of an apply that creates the object."""
        if not isinstance(body, dict):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: the '
                "body must be a JSON object"
            )
        if rt.crd is not None and self._crd_terminating(rt.crd):
            raise APIError(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
            )
        obj = copy.deepcopy(body)
        check_kind(rt, obj)
        causes = check_metadata(rt, obj, ctx)
        m = obj["metadata"]
        name = m.get("name")
        if not name and m.get("generateName"):
            name = str(m["generateName"]) + "".join(secrets.choice(NAME_CHARS) for _ in range(5))
            m["name"] = name
        if not name:
            raise rt.invalid("", [required("metadata.name", "name or generateName is required")])
        if not isinstance(name, str):
            raise bad_request("metadata.name must be a string")
        ns = self._namespace_for(rt, namespace, obj, name)
        requested_managed = m.get("managedFields")
        kind_of_name = {
            "namespaces": "label",
            "services": "dns1035",
        }.get(rt.plural if not rt.group else "", "subdomain")
        if rt.group == "rbac.authorization.k8s.io":
            kind_of_name = "segment"  # RBAC names are path segments ("system:discovery")
        causes = check_name("metadata.name", name, kind_of_name) + causes
        if rt.namespaced:
            self._check_namespace_open(rt, ns, name)
        for key in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "managedFields",
        ):
            m.pop(key, None)
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = rfc3339()
        m["generation"] = 1
        if rt.status and not ctx.system:
            obj.pop("status", None)
        normalize_times(rt, obj)
        env = self.env(ctx)
        strategy = rt.strategy
        if strategy is not None:
            strategy.prepare_create(env, rt, obj)
            causes += strategy.validate(env, rt, obj, None)
        if causes:
            raise rt.invalid(name, causes)
        if self.store.get(rt.gr, ns, name) is not None:
            raise rt.already_exists(name)
        if managed is None:
            managed = managedfields.update(rt, None, obj, requested_managed, _manager(ctx), None)
        _set_managed(obj, managed)
        if ctx.dry_run:
            return obj
        storage_version = self.registry.storage_api_version(rt.gr)
        stored = self.commit(rt, rt.to_storage(obj, storage_version), None)
        return rt.present(stored)

    def _crd_terminating(self, crd_name: str) -> bool:
        crd = self.store.get(("apiextensions.k8s.io", "customresourcedefinitions"), "", crd_name)
        return bool(crd and crd["metadata"].get("deletionTimestamp"))

    # ---- update

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        ctx: Ctx,
        subresource: str | None = None,
    ) -> tuple[Obj, bool]:
        """PUT; returns (object, created)."""
        if not isinstance(body, dict):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: the '
                "body must be a JSON object"
            )
        new = copy.deepcopy(body)
        check_kind(rt, new)
        m = new.get("metadata")
        if not isinstance(m, dict):
            m = {}
            new["metadata"] = m
        if m.get("name") and m["name"] != name:
            raise bad_request(
                f"the name of the object ({m['name']}) does not match the name on the URL ({name})"
            )
        m["name"] = name
        ns = namespace or ""
        if rt.namespaced and m.get("namespace") and m["namespace"] != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if self.store.get(rt.gr, ns, name) is None:
            if subresource is None and rt.gr in CREATE_ON_UPDATE:
                return self.create(rt, namespace, new, ctx), True
            raise rt.not_found(name)
        rv = m.get("resourceVersion")
        if not rv and (rt.is_custom or rt.plural == "customresourcedefinitions"):
            raise rt.invalid(
                name, [Cause("metadata.resourceVersion", "FieldValueInvalid",
                             "Invalid value: 0x0: must be specified for an update")]
            )  # fmt: skip
        return self._update(rt, ns, name, new, ctx, subresource, precondition_rv=rv or None), False

    def _update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        new: Obj,
        ctx: Ctx,
        subresource: str | None,
        precondition_rv: str | None = None,
        managed: list[Obj] | None = None,
        recorded_subresource: str | None = None,
    ) -> Obj:
        """The common part of every write to an existing object; `managed` is the
        managedFields of an apply (other writes record an Update entry here, for
        `recorded_subresource` when the write came through one, such as `scale`)."""
        old_stored = self._stored(rt, namespace, name)
        old = managedfields.copy_object(rt.present(old_stored))
        om = old["metadata"]
        if precondition_rv is not None and str(precondition_rv) != om["resourceVersion"]:
            raise rt.conflict(name)
        new = managedfields.copy_object(new)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        causes = check_metadata(rt, new, ctx)
        m = new["metadata"]
        if m.get("uid") and m["uid"] != om["uid"]:
            raise rt.conflict(
                name,
                f"Precondition failed: UID in precondition: {m['uid']}, UID in object meta: "
                f"{om['uid']}",
            )
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ):
            if key in om:
                m[key] = om[key]
            else:
                m.pop(key, None)
        m.pop("selfLink", None)
        requested_managed = m.pop("managedFields", None)
        if subresource == "status":
            submitted, new = new, managedfields.copy_object(old)
            status = submitted.get("status")
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            if rt.strategy is not None:
                rt.strategy.prepare_status_update(self.env(ctx), rt, new, submitted)
            causes = []
        elif rt.status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        normalize_times(rt, new)
        if om.get("deletionTimestamp"):
            added = [
                f for f in as_list(m.get("finalizers")) if f not in as_list(om.get("finalizers"))
            ]
            if added:
                causes.append(
                    forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted, found "
                        "new finalizers []string{" + ", ".join(json.dumps(f) for f in added) + "}",
                    )
                )
        env = self.env(ctx)
        strategy = rt.strategy
        if strategy is not None:
            if subresource == "status":
                causes += strategy.validate_status(env, rt, new, old)
            else:
                strategy.prepare_update(env, rt, new, old)
                causes += strategy.validate(env, rt, new, old)
        if causes:
            raise rt.invalid(name, causes)
        m = new["metadata"]  # the strategy may have replaced it
        if managed is None:
            managed = managedfields.update(
                rt, old, new, requested_managed, _manager(ctx), recorded_subresource or subresource
            )
        _set_managed(new, managed)
        if generation_view(rt, new) != generation_view(rt, old):
            m["generation"] = int(om.get("generation") or 0) + 1
        if comparable(new) == comparable(old):
            return rt.present(old_stored)  # a no-op: no new resourceVersion, no event
        if ctx.dry_run:
            return new
        storage_version = self.registry.storage_api_version(rt.gr)
        return rt.present(self.commit(rt, rt.to_storage(new, storage_version), old_stored))

    def mutate(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        change: Callable[[Obj], None],
        subresource: str | None = None,
    ) -> Obj | None:
        """A system read-modify-write (controllers); None when the object is gone."""
        stored = self.store.get(rt.gr, namespace, name)
        if stored is None:
            return None
        obj = managedfields.copy_object(rt.present(stored))
        change(obj)
        return self._update(rt, namespace, name, obj, Ctx(system=True), subresource)

    def _finalizers_done(self, rt: ResourceType, obj: Obj) -> bool:
        m = obj["metadata"]
        if as_list(m.get("finalizers")):
            return False
        if rt.gr == ("", "namespaces") and as_list(as_dict(obj.get("spec")).get("finalizers")):
            return False
        return not m.get("deletionGracePeriodSeconds")

    def commit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """Store a write (storage form) and run its side effects; returns the object.

        A write that completes a deletion (deletionTimestamp set, no finalizers left, no
        grace period pending) removes the object instead, as Kubernetes does: watchers
        see a single DELETED event carrying this last state, not a MODIFIED first.
        """
        m = obj["metadata"]
        if old is not None and m.get("deletionTimestamp") and self._finalizers_done(rt, obj):
            gone = self.store.remove(rt.gr, m.get("namespace", ""), m["name"], final=obj)
            if gone is not None:
                self._after_remove(rt, gone)
                return gone
        stored = self.store.put(rt.gr, obj)
        return self._after_write(rt, stored, old)

    def _after_write(self, rt: ResourceType, stored: Obj, old: Obj | None) -> Obj:
        """Side effects of a stored write."""
        m = stored["metadata"]
        if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.registry.register_crd(stored)
        if rt.gr == ("", "namespaces") and old is None:
            self.ensure_service_account(m["name"])
        return stored

    def _after_remove(self, rt: ResourceType, gone: Obj) -> None:
        if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.registry.unregister_crd(gone["metadata"]["name"])
            spec = as_dict(gone.get("spec"))
            plural = as_dict(spec.get("names")).get("plural")
            if spec.get("group") and plural:
                self.store.close_watchers((str(spec["group"]), str(plural)))

    # ---- patch

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        raw: bytes,
        ctx: Ctx,
        subresource: str | None = None,
    ) -> tuple[Obj, bool]:
        """PATCH; returns (object, created) (apply patches may create)."""
        ns = namespace or ""
        if content_type not in PATCH_TYPES:
            raise unsupported_media_type(content_type, PATCH_TYPES)
        if content_type == STRATEGIC_PATCH and (
            rt.is_custom or not patching.supports_strategic_merge(rt.kind)
        ):
            raise unsupported_media_type(content_type, (JSON_PATCH, MERGE_PATCH, APPLY_PATCH))
        if content_type == APPLY_PATCH:
            return self._apply(rt, namespace, name, raw, ctx, subresource)
        if ctx.force:
            raise APIError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be '
                "specified for non-apply patch",
                {
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueForbidden",
                            "message": "Forbidden: may not be specified for non-apply patch",
                            "field": "force",
                        }
                    ],
                },
            )
        document = parse_json(raw)
        old = managedfields.copy_object(rt.present(self._stored(rt, ns, name)))
        if managedfields.patch_touches_managed_fields(content_type == JSON_PATCH, document):
            new = apply_patch(rt, old, content_type, document)
        else:  # spare the patch copying every FieldsV1 tree
            bare = dict(old)
            bare["metadata"] = {k: v for k, v in old["metadata"].items() if k != "managedFields"}
            new = apply_patch(rt, bare, content_type, document)
            new_meta = new.get("metadata")
            if (
                isinstance(new_meta, dict)
                and "managedFields" in old["metadata"]
                and "managedFields" not in new_meta
            ):
                new_meta["managedFields"] = old["metadata"]["managedFields"]
        return self._finish_patch(rt, ns, name, old, new, ctx, subresource), False

    def _finish_patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        old: Obj,
        new: Obj,
        ctx: Ctx,
        subresource: str | None,
        managed: list[Obj] | None = None,
    ) -> Obj:
        m = new.get("metadata")
        if not isinstance(m, dict):
            m = {}
            new["metadata"] = m
        if m.get("name") != name:
            raise bad_request(
                f"the name of the object ({m.get('name')}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and m.get("namespace") != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        rv = m.get("resourceVersion") or old["metadata"]["resourceVersion"]  # unset: no check
        if rv != old["metadata"]["resourceVersion"]:
            raise rt.conflict(name)
        if new.get("apiVersion") != rt.api_version or new.get("kind") != rt.kind:
            check_kind(rt, new)
        return self._update(
            rt, ns, name, new, ctx, subresource, precondition_rv=rv, managed=managed
        )

    def _apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        raw: bytes,
        ctx: Ctx,
        subresource: str | None,
    ) -> tuple[Obj, bool]:
        if not ctx.field_manager:
            raise APIError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch",
                {
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: is required for apply patch",
                            "field": "fieldManager",
                        }
                    ],
                },
            )
        applied = parse_yaml(raw)
        if not isinstance(applied, dict):
            raise bad_request("the applied configuration must be an object")
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise bad_request(
                "invalid object type: apiVersion and kind must be set in an apply patch"
            )
        check_kind(rt, applied)
        m = as_dict(applied.get("metadata"))
        if m.get("name") and m["name"] != name:
            raise bad_request(
                f"the name of the object ({m['name']}) does not match the name on the URL ({name})"
            )
        if m.get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil")
        ns = namespace or ""
        stored = self.store.get(rt.gr, ns, name)
        manager = ctx.field_manager
        if stored is None:
            if subresource is not None:
                raise rt.not_found(name)
            applied.setdefault("metadata", {})["name"] = name
            created, managed = managedfields.apply(
                rt, None, applied, manager, None, force=ctx.force
            )
            return self.create(rt, namespace, created, ctx, managed=managed), True
        old = managedfields.copy_object(rt.present(stored))
        patch_doc = copy.deepcopy(applied)
        patch_doc.get("metadata", {}).pop("resourceVersion", None)
        new, managed = managedfields.apply(
            rt, old, patch_doc, manager, subresource, force=ctx.force
        )
        applied_rv = m.get("resourceVersion")
        new.setdefault("metadata", {})["resourceVersion"] = (
            applied_rv or old["metadata"]["resourceVersion"]
        )
        return self._finish_patch(rt, ns, name, old, new, ctx, subresource, managed), False

    # ---- delete

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: DeleteOptions
    ) -> tuple[Obj, bool]:
        """DELETE; returns (the object as it is now, removed)."""
        ns = namespace or ""
        stored = self._stored(rt, ns, name)
        m = stored["metadata"]
        if options.precondition_uid and options.precondition_uid != m.get("uid"):
            raise rt.conflict(
                name,
                f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in "
                f"object meta: {m.get('uid')}",
            )
        if options.precondition_rv and options.precondition_rv != m.get("resourceVersion"):
            raise rt.conflict(
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{options.precondition_rv}, ResourceVersion in object meta: "
                f"{m.get('resourceVersion')}",
            )
        if options.propagation is not None and options.propagation not in DELETE_POLICIES:
            raise APIError(
                422,
                "Invalid",
                'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                f'"{options.propagation}": supported values: "Foreground", "Background", '
                '"Orphan"',
                {
                    "group": "meta.k8s.io",
                    "kind": "DeleteOptions",
                    "causes": [
                        {
                            "reason": "FieldValueNotSupported",
                            "message": f'Unsupported value: "{options.propagation}"',
                            "field": "propagationPolicy",
                        }
                    ],
                },
            )
        if options.grace_period is not None and options.grace_period < 0:
            options.grace_period = 0
        if rt.gr == ("", "namespaces") and name in IMMORTAL_NAMESPACES:
            raise rt.forbidden(name, "this namespace may not be deleted")
        obj = managedfields.copy_object(stored)
        m = obj["metadata"]
        finalizers = list(as_list(m.get("finalizers")))
        policy = options.propagation
        if policy == "Orphan":
            finalizers = [f for f in finalizers if f != FOREGROUND_FINALIZER]
            if ORPHAN_FINALIZER not in finalizers:
                finalizers.append(ORPHAN_FINALIZER)
        elif policy == "Foreground":
            finalizers = [f for f in finalizers if f != ORPHAN_FINALIZER]
            if FOREGROUND_FINALIZER not in finalizers:
                finalizers.append(FOREGROUND_FINALIZER)
        elif policy == "Background":
            finalizers = [
                f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)
            ]
        if finalizers:
            m["finalizers"] = finalizers
        else:
            m.pop("finalizers", None)
        is_pod = rt.gr == ("", "pods")
        grace = 0
        if is_pod and not self.simulate:
            spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
            default = spec.get("terminationGracePeriodSeconds", 30)
            grace = options.grace_period if options.grace_period is not None else int(default or 0)
            if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                grace = 0
        if options.dry_run:
            return rt.present(obj), False
        moment = now()
        if m.get("deletionTimestamp"):
            # already being deleted: a shorter grace period (pods) or new GC finalizers
            current = int(m.get("deletionGracePeriodSeconds") or 0)
            if is_pod and grace < current:
                m["deletionGracePeriodSeconds"] = grace
                m["deletionTimestamp"] = rfc3339(
                    moment.fromtimestamp(moment.timestamp() + grace, moment.tzinfo)
                )
            if comparable(obj) == comparable(stored):
                return rt.present(stored), False
            result = self.commit(rt, obj, stored)
            removed = self.store.get(rt.gr, ns, name) is None
            return rt.present(result), removed
        pending_namespace = rt.gr == ("", "namespaces")
        if grace > 0 or finalizers or pending_namespace:
            m["deletionTimestamp"] = rfc3339(
                moment.fromtimestamp(moment.timestamp() + grace, moment.tzinfo)
            )
            m["deletionGracePeriodSeconds"] = grace
            if m.get("generation"):
                m["generation"] = int(m["generation"]) + 1
            if pending_namespace:
                obj.setdefault("status", {})["phase"] = "Terminating"
            if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
                from devcluster.resources.crds import crd_status

                obj["status"] = crd_status(obj, stored)
            result = self.commit(rt, obj, stored)
            removed = self.store.get(rt.gr, ns, name) is None
            return rt.present(result), removed
        gone = self.store.remove(rt.gr, ns, name)
        assert gone is not None
        self._after_remove(rt, gone)
        return rt.present(gone), True

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        options: DeleteOptions,
        label_selector: str | None,
        field_selector: str | None,
    ) -> list[Obj]:
        items, _ = self.list_objects(
            rt, namespace, label_selector=label_selector, field_selector=field_selector
        )
        deleted = []
        for item in items:
            m = item["metadata"]
            try:
                obj, _removed = self.delete(
                    rt, m.get("namespace"), m["name"], DeleteOptions(**vars(options))
                )
            except APIError as exc:
                if exc.code == 404:
                    continue
                raise
            deleted.append(obj)
        return deleted

    # ---- scale

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        assert rt.scale is not None
        obj = self.get(rt, namespace, name)
        m = obj["metadata"]
        _, spec_replicas = json_path_get(obj, rt.scale.spec_replicas_path)
        _, status_replicas = json_path_get(obj, rt.scale.status_replicas_path)
        scale: Obj = {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": m["name"],
                "uid": m["uid"],
                "resourceVersion": m["resourceVersion"],
                "creationTimestamp": m["creationTimestamp"],
            },
            "spec": {},
            "status": {"replicas": status_replicas if isinstance(status_replicas, int) else 0},
        }
        if m.get("namespace"):
            scale["metadata"]["namespace"] = m["namespace"]
        if isinstance(spec_replicas, int):
            scale["spec"]["replicas"] = spec_replicas
        if rt.scale.label_selector_path:
            found, selector = json_path_get(obj, rt.scale.label_selector_path)
            if found and isinstance(selector, dict):  # a built-in kind's LabelSelector
                selector = _selector_string(selector)
            if found and isinstance(selector, str) and selector:
                scale["status"]["selector"] = selector
        return scale

    def update_scale(
        self, rt: ResourceType, namespace: str | None, name: str, body: Any, ctx: Ctx
    ) -> Obj:
        assert rt.scale is not None
        if not isinstance(body, dict):
            raise bad_request('Scale in version "v1" cannot be handled as a Scale')
        if body.get("kind") not in (None, "Scale") or body.get("apiVersion") not in (
            None,
            "autoscaling/v1",
        ):
            raise bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                "expected API version (autoscaling/v1)"
            )
        replicas = as_dict(body.get("spec")).get("replicas", 0)
        m = as_dict(body.get("metadata"))
        if m.get("name") and m["name"] != name:
            raise bad_request(
                f"the name of the object ({m['name']}) does not match the name on the URL ({name})"
            )
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise APIError(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{json.dumps(replicas)}: must be greater than or equal to 0",
                {
                    "name": name,
                    "group": "autoscaling",
                    "kind": "Scale",
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "message": f"Invalid value: {json.dumps(replicas)}: must be greater "
                            "than or equal to 0",
                            "field": "spec.replicas",
                        }
                    ],
                },
            )
        ns = namespace or ""
        obj = managedfields.copy_object(rt.present(self._stored(rt, ns, name)))
        rv = m.get("resourceVersion") or None
        if rv is not None and rv != obj["metadata"]["resourceVersion"]:
            raise rt.conflict(name)
        json_path_set(obj, rt.scale.spec_replicas_path, replicas)
        try:
            self._update(rt, ns, name, obj, ctx, None, recorded_subresource="scale")
        except APIError as exc:
            if exc.code == 422 and exc.details:
                path = json_path_field(rt.scale.spec_replicas_path)
                causes = [c for c in exc.details.get("causes", []) if c.get("field") == path]
                if causes:
                    raise APIError(
                        422,
                        "Invalid",
                        exc.message.replace(f'{rt.qualified_kind} "', 'Scale.autoscaling "', 1),
                        exc.details,
                    ) from exc
            raise
        return self.get_scale(rt, namespace, name)

    def patch_scale(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        raw: bytes,
        ctx: Ctx,
    ) -> Obj:
        if content_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
            raise unsupported_media_type(content_type, (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH))
        current = self.get_scale(rt, namespace, name)
        document = parse_json(raw)
        kind = MERGE_PATCH if content_type == STRATEGIC_PATCH else content_type
        scale_type = ResourceType("autoscaling", "v1", "scale", "scale", "Scale", True)
        patched = apply_patch(scale_type, current, kind, document)
        if as_dict(patched.get("metadata")).get("resourceVersion") == current["metadata"].get(
            "resourceVersion"
        ):
            patched.setdefault("metadata", {}).pop("resourceVersion", None)
        return self.update_scale(rt, namespace, name, patched, ctx)


def _manager(ctx: Ctx) -> str:
    """Who makes a write: `fieldManager`, else the User-Agent's first product (as
    kube-apiserver derives it); devcluster's own controllers are `devcluster`."""
    if ctx.field_manager:
        return ctx.field_manager
    if ctx.system:
        return managedfields.SYSTEM_MANAGER
    return ctx.user_agent_manager


def _set_managed(obj: Obj, managed: list[Obj]) -> None:
    if managed:
        obj["metadata"]["managedFields"] = managed
    else:
        obj["metadata"].pop("managedFields", None)


def _selector_string(selector: Obj) -> str:
    """A metav1.LabelSelector as a Scale's `status.selector` (`app=web,tier in (a,b)`)."""
    try:
        return str(selectors.label_selector_from_dict(selector))
    except selectors.SelectorError:
        return ""
