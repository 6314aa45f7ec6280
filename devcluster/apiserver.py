"""The devcluster API server: the Kubernetes REST API over the in-memory store.

`create_app()` returns an aiohttp application; `serve()` starts one on a port, and
`ServerThread` runs one on a free port in a background thread (for tests and tools
that need a server next to their own event loop). `Cluster` holds the object
semantics (create, update, patch, delete, finalizers, generation, subresources)
independently of HTTP; the built-in controllers of `devcluster.gc` (garbage collector,
namespace and CRD clean-up, PVC protection, event expiry, Endpoints and EndpointSlices)
use it. Resource types and per-kind rules live in `devcluster.resources`, tables in
`devcluster.tables`, OpenAPI documents in `devcluster.openapi`.

What follows Kubernetes closely: the verbs (including watch with resourceVersion,
bookmarks, `sendInitialEvents`, timeouts and 410 Expired), Status errors with
Kubernetes' reasons and messages, optimistic concurrency (409 on a stale
resourceVersion; custom resources and CRDs need one on PUT, as in Kubernetes),
generation, finalizers and deletionTimestamp, graceful pod deletion, cascading
deletion, field validation (`fieldValidation=Strict|Warn|Ignore`, warnings in
`Warning: 299` headers) and time fields re-serialized as Kubernetes does.

Deliberate simplifications:

- Server-side apply (`application/apply-patch+yaml`) merges the applied object into
  the live one (strategic merge for built-in kinds, JSON merge for custom resources)
  and creates the object when it is missing. There is no field ownership: fields
  dropped from an applied configuration are not removed, and there are no apply
  conflicts (`force` is accepted and ignored); `managedFields` are not kept.
- Built-in kinds are validated for what matters here (names, labels, containers,
  ports, immutability of pod specs and cluster IPs, ...), not field by field; unknown
  fields are detected at the top level and in `metadata` only.
- Protobuf request bodies (kubectl's typed clients: `kubectl create configmap|secret|
  namespace|serviceaccount|service`) are decoded for those kinds only; responses are
  always JSON (or YAML when asked).
- Continued lists (`continue`) read the current state after the last key served, not
  a consistent snapshot at the first page's resourceVersion.
- `pods/log`: `timestamps=true` prefixes lines with the time the server read them
  (the kubelet writes no timestamps); `sinceSeconds`/`sinceTime` are ignored.
- Every object gets `metadata.generation` (Kubernetes omits it for some core kinds).
- No authentication or authorization: every request is allowed, and access reviews
  (`kubectl auth can-i`) answer yes. No exec, attach, port-forward, proxy, eviction or
  service account tokens.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import os
import platform
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from devcluster import DEFAULT_KUBERNETES_VERSION, paths
from devcluster import patch as patching
from devcluster import selectors as sel
from devcluster.protobuf import decode_protobuf
from devcluster.resources.fields import (
    Cause,
    check_labels,
    check_name,
    check_qualified_name,
    forbidden,
    invalid,
    required,
)
from devcluster.resources.jsonpath import json_path_field, json_path_get, json_path_set
from devcluster.resources.registry import Registry
from devcluster.resources.times import normalize_times
from devcluster.resources.types import (
    IMMORTAL_NAMESPACES,
    INITIAL_NAMESPACES,
    METADATA_FIELDS,
    Env,
    ResourceType,
)
from devcluster.store import (
    APIError,
    Obj,
    Store,
    StoreEvent,
    TooOldResourceVersionError,
    bad_request,
    now,
    rfc3339,
    status_object,
    success_status,
)
from devcluster.values import as_dict, as_list

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # Kubernetes' request body limit
WATCH_BATCH = 512  # most watch events sent in one write
DEFAULT_NODE = "devcluster"
JSON_TYPE = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
DELETE_POLICIES = ("Foreground", "Background", "Orphan")
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
NAMESPACE_FINALIZER = "kubernetes"
CREATE_ON_UPDATE = frozenset({("", "events"), ("", "endpoints"), ("coordination.k8s.io", "leases")})


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# =========================================================================== options


@dataclass
class Ctx:
    """Per-request options and the warnings a request collects."""

    dry_run: bool = False
    field_validation: str = "Warn"
    field_manager: str | None = None
    warnings: list[str] = field(default_factory=list)
    system: bool = False


@dataclass
class DeleteOptions:
    propagation: str | None = None
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


# =========================================================================== the cluster


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
        from devcluster.gc import Controllers

        self.controllers = Controllers(self)
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
        node_type = self.rt("", "v1", "nodes")
        node = self.node_object()
        if self.store.get(node_type.gr, "", self.node_name) is None:
            self.create(node_type, None, node, ctx)
        else:  # a restart: this process's versions and a fresh heartbeat

            def refresh(obj: Obj) -> None:
                obj["status"] = node["status"]

            self.mutate(node_type, "", self.node_name, refresh, subresource="status")
        self.controllers.attach()

    def node_object(self) -> Obj:
        cpus = os.cpu_count() or 1
        memory_kib = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
        machine = platform.machine()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
        capacity = {"cpu": str(cpus), "memory": f"{memory_kib}Ki", "pods": "10000"}
        stamp = rfc3339()
        return {
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": arch,
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": arch,
                    "node-role.kubernetes.io/control-plane": "",
                },
            },
            "spec": {"podCIDR": "127.10.0.0/16"},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "devcluster kubelet is posting ready status",
                        "lastHeartbeatTime": stamp,
                        "lastTransitionTime": stamp,
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": self.kubernetes_version,
                    "kubeProxyVersion": self.kubernetes_version,
                    "operatingSystem": "linux",
                    "architecture": arch,
                    "osImage": platform.platform(),
                    "kernelVersion": platform.release(),
                    "containerRuntimeVersion": "devcluster://local-processes",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        }

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
        matches = self.matcher(rt, label_selector, field_selector)
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

    def matcher(
        self, rt: ResourceType, label_selector: str | None, field_selector: str | None
    ) -> Callable[[Obj], bool]:
        try:
            labels = sel.parse_label_selector(label_selector) if label_selector else None
            fields = (
                sel.parse_field_selector(field_selector, rt.supported_field_selectors())
                if field_selector
                else None
            )
        except sel.SelectorError as exc:
            raise bad_request(str(exc)) from exc

        def matches(obj: Obj) -> bool:
            if labels is not None and not labels.matches(as_dict(obj["metadata"].get("labels"))):
                return False
            return fields is None or bool(fields.matches(obj))

        return matches

    # ---- metadata helpers

    def _check_metadata(self, rt: ResourceType, obj: Obj, ctx: Ctx) -> list[Cause]:
        m = obj.get("metadata")
        if m is None:
            m = {}
            obj["metadata"] = m
        if not isinstance(m, dict):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                "metadata must be an object"
            )
        for key in ("labels", "annotations"):
            value = m.get(key)
            if value is None:
                m.pop(key, None)
                continue
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise bad_request(
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                    f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{key} "
                    "of type map[string]string"
                )
        if m.get("finalizers") is None:
            m.pop("finalizers", None)
        elif not isinstance(m["finalizers"], list) or not all(
            isinstance(f, str) for f in m["finalizers"]
        ):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                "json: cannot unmarshal into Go struct field ObjectMeta.metadata.finalizers "
                "of type []string"
            )
        if m.get("ownerReferences") is None:
            m.pop("ownerReferences", None)
        elif not isinstance(m["ownerReferences"], list):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                "json: cannot unmarshal into Go struct field ObjectMeta.metadata.ownerReferences"
            )
        causes: list[Cause] = []
        causes += check_labels(as_dict(m.get("labels")))
        for key in as_dict(m.get("annotations")):
            causes += check_qualified_name("metadata.annotations", key)
        size = sum(len(k) + len(v) for k, v in as_dict(m.get("annotations")).items())
        if size > 256 * 1024:
            causes.append(
                Cause(
                    "metadata.annotations",
                    "FieldValueTooLong",
                    "Too long: must have at most 262144 bytes",
                )
            )
        for i, ref in enumerate(as_list(m.get("ownerReferences"))):
            if not isinstance(ref, dict):
                causes.append(invalid(f"metadata.ownerReferences[{i}]", ref, "must be an object"))
                continue
            for key in ("apiVersion", "kind", "name", "uid"):
                if not ref.get(key):
                    causes.append(required(f"metadata.ownerReferences[{i}].{key}"))
        controllers = [r for r in as_list(m.get("ownerReferences")) if as_dict(r).get("controller")]
        if len(controllers) > 1:
            causes.append(
                invalid(
                    "metadata.ownerReferences",
                    [str(as_dict(r).get("name")) for r in controllers],
                    "Only one reference can have Controller set to true",
                )
            )
        unknown = sorted(set(m) - METADATA_FIELDS)
        for key in unknown:
            m.pop(key)
            self._unknown_field(rt, f"metadata.{key}", ctx)
        if rt.top_fields is not None:
            for key in sorted(set(obj) - rt.top_fields):
                obj.pop(key)
                self._unknown_field(rt, key, ctx)
        return causes

    @staticmethod
    def _unknown_field(rt: ResourceType, path: str, ctx: Ctx) -> None:
        if ctx.system:
            return
        if ctx.field_validation == "Strict":
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f'strict decoding error: unknown field "{path}"'
            )
        if ctx.field_validation == "Warn":
            ctx.warnings.append(f'unknown field "{path}"')

    @staticmethod
    def _generation_view(rt: ResourceType, obj: Obj) -> Obj:
        view = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
        if rt.status or not rt.is_custom:
            view.pop("status", None)
        return view

    @staticmethod
    def _comparable(obj: Obj) -> Obj:
        result = dict(obj)
        result["metadata"] = {
            k: v for k, v in as_dict(obj.get("metadata")).items() if k != "resourceVersion"
        }
        return result

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

    def _check_kind(self, rt: ResourceType, obj: Obj) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind

    # ---- create

    def create(self, rt: ResourceType, namespace: str | None, body: Any, ctx: Ctx) -> Obj:
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
        self._check_kind(rt, obj)
        causes = self._check_metadata(rt, obj, ctx)
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
        kind_of_name = {
            "namespaces": "label",
            "services": "dns1035",
        }.get(rt.plural if not rt.group else "", "subdomain")
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
        self._check_kind(rt, new)
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
    ) -> Obj:
        old_stored = self._stored(rt, namespace, name)
        old = copy.deepcopy(rt.present(old_stored))
        om = old["metadata"]
        if precondition_rv is not None and str(precondition_rv) != om["resourceVersion"]:
            raise rt.conflict(name)
        new = copy.deepcopy(new)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        causes = self._check_metadata(rt, new, ctx)
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
        m.pop("managedFields", None)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
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
        if self._generation_view(rt, new) != self._generation_view(rt, old):
            m["generation"] = int(om.get("generation") or 0) + 1
        if self._comparable(new) == self._comparable(old):
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
        obj = copy.deepcopy(rt.present(stored))
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
        document = parse_json(raw)
        old = copy.deepcopy(rt.present(self._stored(rt, ns, name)))
        new = self._apply_patch(rt, old, content_type, document)
        return self._finish_patch(rt, ns, name, old, new, ctx, subresource), False

    @staticmethod
    def _apply_patch(rt: ResourceType, old: Obj, content_type: str, document: Any) -> Obj:
        try:
            if content_type == JSON_PATCH:
                result = patching.json_patch(old, document)
            elif content_type == MERGE_PATCH:
                if not isinstance(document, dict):
                    raise bad_request(
                        "json: cannot unmarshal the patch into Go value of type "
                        "map[string]interface {}"
                    )
                result = patching.json_merge_patch(old, document)
            else:
                result = patching.strategic_merge_patch(old, document, rt.kind)
        except patching.PatchError as exc:
            if exc.http_status == 400:
                raise bad_request(str(exc)) from exc
            if exc.http_status == 413:
                raise APIError(413, "RequestEntityTooLarge", str(exc)) from exc
            raise APIError(
                422,
                "Invalid",
                patching.JSON_PATCH_FAILURE_MESSAGE,
                {"causes": [{"reason": "UnexpectedServerResponse", "message": str(exc)}]},
            ) from exc
        if not isinstance(result, dict):
            raise bad_request("the patched object must be a JSON object")
        return result

    def _finish_patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        old: Obj,
        new: Obj,
        ctx: Ctx,
        subresource: str | None,
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
            self._check_kind(rt, new)
        return self._update(rt, ns, name, new, ctx, subresource, precondition_rv=rv)

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
        self._check_kind(rt, applied)
        m = as_dict(applied.get("metadata"))
        if m.get("name") and m["name"] != name:
            raise bad_request(
                f"the name of the object ({m['name']}) does not match the name on the URL ({name})"
            )
        ns = namespace or ""
        stored = self.store.get(rt.gr, ns, name)
        if stored is None:
            if subresource is not None:
                raise rt.not_found(name)
            applied.setdefault("metadata", {})["name"] = name
            return self.create(rt, namespace, applied, ctx), True
        old = copy.deepcopy(rt.present(stored))
        patch_doc = copy.deepcopy(applied)
        patch_doc.get("metadata", {}).pop("resourceVersion", None)
        if not rt.is_custom and patching.supports_strategic_merge(rt.kind):
            kind = STRATEGIC_PATCH
        else:
            kind = MERGE_PATCH
        new = self._apply_patch(rt, old, kind, patch_doc)
        applied_rv = m.get("resourceVersion")
        new.setdefault("metadata", {})["resourceVersion"] = (
            applied_rv or old["metadata"]["resourceVersion"]
        )
        return self._finish_patch(rt, ns, name, old, new, ctx, subresource), False

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
        obj = copy.deepcopy(stored)
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
            if self._comparable(obj) == self._comparable(stored):
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
        obj = copy.deepcopy(rt.present(self._stored(rt, ns, name)))
        rv = m.get("resourceVersion") or None
        if rv is not None and rv != obj["metadata"]["resourceVersion"]:
            raise rt.conflict(name)
        json_path_set(obj, rt.scale.spec_replicas_path, replicas)
        try:
            self._update(rt, ns, name, obj, ctx, None)
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
        patched = self._apply_patch(scale_type, current, kind, document)
        if as_dict(patched.get("metadata")).get("resourceVersion") == current["metadata"].get(
            "resourceVersion"
        ):
            patched.setdefault("metadata", {}).pop("resourceVersion", None)
        return self.update_scale(rt, namespace, name, patched, ctx)


def unsupported_media_type(content_type: str, accepted: tuple[str, ...]) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )


MAX_DEPTH = 100  # deeper documents are refused (Python recursion would not cope)


def check_depth(document: Any) -> Any:
    """Refuse documents nested more than MAX_DEPTH levels (iteratively, no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"the object is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return document


def parse_json(raw: bytes) -> Any:
    try:
        return check_depth(json.loads(raw))
    except RecursionError as exc:
        raise bad_request(f"the object is nested more than {MAX_DEPTH} levels deep") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding the request body as JSON: {exc}") from exc


def parse_yaml(raw: bytes) -> Any:
    try:
        return check_depth(yaml.safe_load(raw))
    except RecursionError as exc:
        raise bad_request(f"the object is nested more than {MAX_DEPTH} levels deep") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding YAML: {exc}") from exc


# =========================================================================== HTTP


def version_info(git_version: str) -> Obj:
    match = re.match(r"v?(\d+)\.(\d+)", git_version)
    major, minor = (match.group(1), match.group(2)) if match else ("1", "33")
    machine = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "devcluster",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": f"linux/{arch}",
    }


@dataclass
class Route:
    """What a resource URL addresses."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False


def parse_api_path(parts: list[str]) -> Route | None:
    """`api/v1/...` or `apis/<g>/<v>/...` split into a Route (None: not an API path)."""
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    route = Route(group, version)
    if rest[:1] == ["watch"]:
        route.watch = True
        rest = rest[1:]
    if not rest:
        return route
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and rest[2] in ("status", "finalize") and len(rest) == 3)
    ):
        route.namespace = rest[1]
        rest = rest[2:]
    route.plural = rest[0]
    if len(rest) >= 2:
        route.name = rest[1]
    if len(rest) >= 3:
        route.subresource = rest[2]
    if len(rest) >= 4:
        route.subresource = "/".join(rest[2:])
    return route


@dataclass
class Accept:
    table: str | None = None  # "meta.k8s.io/v1" or "meta.k8s.io/v1beta1"
    partial: str | None = None  # PartialObjectMetadata(List)
    yaml: bool = False


def parse_accept(header: str) -> Accept:
    result = Accept()
    acceptable = False
    for entry in header.split(","):
        parts = [p.strip() for p in entry.split(";")]
        mime = parts[0].lower()
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if mime in ("application/json", "*/*", "application/*", ""):
            as_kind = params.get("as")
            if as_kind == "Table" and params.get("g") == "meta.k8s.io":
                if result.table is None and params.get("v") in ("v1", "v1beta1"):
                    result.table = f"meta.k8s.io/{params['v']}"
                    acceptable = True
                continue
            if as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                if params.get("g") == "meta.k8s.io" and result.partial is None:
                    result.partial = f"meta.k8s.io/{params.get('v', 'v1')}"
                    acceptable = True
                continue
            if as_kind:
                continue
            acceptable = True
        elif mime in ("application/yaml", "text/yaml"):
            if not acceptable:
                result.yaml = True
            acceptable = True
    if not acceptable and header.strip():
        raise APIError(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    return result


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise bad_request(f"invalid {name}: {value!r} is not an integer") from exc


class APIServer:
    """The HTTP face of a Cluster."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        bookmark_interval: float = 30.0,
        max_watch_seconds: float = 1800.0,
        log_poll_interval: float = 0.2,
    ) -> None:
        self.cluster = cluster
        self.bookmark_interval = bookmark_interval
        self.max_watch_seconds = max_watch_seconds
        self.log_poll_interval = log_poll_interval
        self.stopping: asyncio.Event | None = None  # created on startup
        self._streams: set[asyncio.Event] = set()

    # ---- plumbing

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except APIError as exc:
            return self.error_response(exc)
        except web.HTTPException as exc:
            if exc.status == 413:
                return self.error_response(too_large())
            if exc.status == 404:
                return self.error_response(not_found_path())
            if exc.status == 405:
                return self.error_response(method_not_allowed())
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            return self.error_response(
                APIError(500, "InternalError", f"Internal error occurred: {exc!r}")
            )

    @staticmethod
    def error_response(exc: APIError) -> web.Response:
        return web.Response(status=exc.code, body=dumps(exc.status()), content_type=JSON_TYPE)

    @staticmethod
    def respond(
        request: web.Request,
        obj: Any,
        status: int = 200,
        warnings: list[str] | None = None,
        accept: Accept | None = None,
    ) -> web.Response:
        headers: dict[str, str] = {}
        response = web.Response(status=status)
        if accept is not None and accept.yaml:
            response.body = yaml.safe_dump(obj, sort_keys=False).encode()
            response.content_type = "application/yaml"
        else:
            response.body = dumps(obj)
            response.content_type = JSON_TYPE
        for key, value in headers.items():
            response.headers[key] = value
        for warning in dict.fromkeys(warnings or []):
            text = warning.replace('"', '\\"').replace("\n", " ")
            response.headers.add("Warning", f'299 - "{text}"')
        return response

    async def read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise too_large()
        data = await request.read()
        if len(data) > MAX_BODY:
            raise too_large()
        return data

    async def read_object(self, request: web.Request) -> Any:
        raw = await self.read_body(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in ("application/yaml", "text/yaml", "application/x-yaml"):
            return parse_yaml(raw)
        if content_type == "application/vnd.kubernetes.protobuf":
            return decode_protobuf(raw)
        if content_type in ("", JSON_TYPE, "*/*"):
            return parse_json(raw)
        raise unsupported_media_type(
            content_type, (JSON_TYPE, "application/yaml", "application/vnd.kubernetes.protobuf")
        )

    # ---- app

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=MAX_BODY + 1024)
        app.router.add_get("/version", self.get_version)
        app.router.add_get("/version/", self.get_version)
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, self.health)
            app.router.add_get(path + "/{check:.*}", self.health)
        app.router.add_get("/api", self.get_api_versions)
        app.router.add_get("/api/", self.get_api_versions)
        app.router.add_get("/apis", self.get_api_groups)
        app.router.add_get("/apis/", self.get_api_groups)
        app.router.add_get("/openapi/v2", self.get_openapi_v2)
        app.router.add_get("/openapi/v3", self.get_openapi_v3_root)
        app.router.add_get("/openapi/v3/{path:.*}", self.get_openapi_v3)
        app.router.add_route("*", "/{path:.*}", self.dispatch)
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        app.on_cleanup.append(self.on_cleanup)
        return app

    async def on_startup(self, app: web.Application) -> None:
        self.stopping = asyncio.Event()
        self.cluster.controllers.start()

    async def on_shutdown(self, app: web.Application) -> None:
        if self.stopping is not None:
            self.stopping.set()
        for event in list(self._streams):
            event.set()
        self.cluster.store.close_watchers()

    async def on_cleanup(self, app: web.Application) -> None:
        await self.cluster.controllers.stop()
        self.cluster.store.flush()

    # ---- discovery

    async def get_version(self, request: web.Request) -> web.Response:
        return self.respond(request, version_info(self.cluster.kubernetes_version))

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def get_api_versions(self, request: web.Request) -> web.Response:
        host = request.host or "127.0.0.1"
        return self.respond(
            request,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            },
        )

    def api_group(self, group: str) -> Obj:
        versions = self.cluster.registry.versions(group)
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    async def get_api_groups(self, request: web.Request) -> web.Response:
        groups = [self.api_group(g) for g in self.cluster.registry.groups() if g]
        return self.respond(request, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in self.cluster.registry.resources(group, version):
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            sub = {"singularName": "", "namespaced": rt.namespaced, "kind": rt.kind}
            if rt.status:
                resources.append(
                    {"name": f"{rt.plural}/status", **sub, "verbs": ["get", "patch", "update"]}
                )
            if rt.scale is not None:
                resources.append(
                    {
                        "name": f"{rt.plural}/scale",
                        **sub,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if rt.log:
                resources.append({"name": f"{rt.plural}/log", **sub, "verbs": ["get"]})
            if rt.gr == ("", "namespaces"):
                resources.append({"name": "namespaces/finalize", **sub, "verbs": ["update"]})
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    # ---- OpenAPI

    async def get_openapi_v2(self, request: web.Request) -> web.Response:
        from devcluster import openapi

        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and "json" not in accept.split("protobuf")[0]:
            return web.Response(
                body=openapi.v2_protobuf(self.cluster.registry, self.cluster.kubernetes_version),
                content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )
        return self.respond(
            request, openapi.v2_document(self.cluster.registry, self.cluster.kubernetes_version)
        )

    async def get_openapi_v3_root(self, request: web.Request) -> web.Response:
        from devcluster import openapi

        return self.respond(
            request, openapi.v3_root(self.cluster.registry, self.cluster.kubernetes_version)
        )

    async def get_openapi_v3(self, request: web.Request) -> web.Response:
        from devcluster import openapi

        document = openapi.v3_document(
            self.cluster.registry, request.match_info["path"], self.cluster.kubernetes_version
        )
        if document is None:
            raise not_found_path()
        return self.respond(request, document)

    # ---- resources

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        registry = self.cluster.registry
        if len(parts) == 2 and parts[0] == "apis" and request.method == "GET":
            if not registry.versions(parts[1]):
                raise not_found_path()
            group = {"kind": "APIGroup", "apiVersion": "v1", **self.api_group(parts[1])}
            return self.respond(request, group)
        route = parse_api_path(parts)
        if route is None:
            raise not_found_path()
        if route.plural is None:
            if request.method != "GET":
                raise method_not_allowed()
            if not registry.resources(route.group, route.version):
                raise not_found_path()
            return self.respond(request, self.resource_list(route.group, route.version))
        rt = registry.get(route.group, route.version, route.plural)
        if rt is None:
            raise not_found_path()
        if route.namespace is not None and not rt.namespaced:
            raise not_found_path()
        if rt.virtual and (request.method != "POST" or route.name is not None):
            raise method_not_allowed()
        return await self.serve_resource(request, rt, route)

    async def serve_resource(
        self, request: web.Request, rt: ResourceType, route: Route
    ) -> web.StreamResponse:
        q = request.query
        method = request.method
        cluster = self.cluster
        accept = parse_accept(request.headers.get("Accept", ""))
        ctx = Ctx(
            dry_run="All" in q.getall("dryRun", []),
            field_validation=q.get("fieldValidation") or "Warn",
            field_manager=q.get("fieldManager"),
        )
        if ctx.field_validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{ctx.field_validation}": supported '
                'values: "Ignore", "Strict", "Warn"'
            )
        for value in q.getall("dryRun", []):
            if value != "All":
                raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        namespace = route.namespace if rt.namespaced else None
        name, sub = route.name, route.subresource

        if name is None:
            watch = route.watch or _bool(q.get("watch"))
            if method == "GET" and watch:
                return await self.serve_watch(request, rt, namespace, None, accept)
            if method == "GET":
                return self.serve_list(request, rt, namespace, accept)
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise method_not_allowed()
                if "create" not in rt.verbs:
                    raise method_not_allowed()
                if rt.virtual:  # kubectl sends these in protobuf: no need to read them
                    raw = await self.read_body(request)
                    content_type = request.headers.get("Content-Type", JSON_TYPE)
                    body = parse_json(raw) if "json" in content_type and raw.strip() else {}
                    return self.respond(request, review(rt, body), 201)
                body = await self.read_object(request)
                new_obj = cluster.create(rt, namespace, body, ctx)
                return self.respond_object(request, rt, new_obj, 201, ctx, accept)
            if method == "DELETE":
                if "deletecollection" not in rt.verbs or (rt.namespaced and namespace is None):
                    raise method_not_allowed()
                options = await self.delete_options(request)
                deleted = cluster.delete_collection(
                    rt, namespace, options, q.get("labelSelector"), q.get("fieldSelector")
                )
                result = {
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(cluster.store.resource_version)},
                    "items": deleted,
                }
                return self.respond(request, result, warnings=ctx.warnings)
            raise method_not_allowed()

        if rt.namespaced and namespace is None:
            raise not_found_path()
        if route.watch:
            if method != "GET" or sub is not None:
                raise method_not_allowed()
            return await self.serve_watch(request, rt, namespace, name, accept)

        if sub is None:
            if method == "GET":
                if _bool(q.get("watch")):
                    return await self.serve_watch(request, rt, namespace, name, accept)
                obj = cluster.get(rt, namespace, name)
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            if method == "PUT":
                body = await self.read_object(request)
                obj, created = cluster.update(rt, namespace, name, body, ctx)
                return self.respond_object(request, rt, obj, 201 if created else 200, ctx, accept)
            if method == "PATCH":
                obj, created = await self.do_patch(request, rt, namespace, name, ctx, None)
                return self.respond_object(request, rt, obj, 201 if created else 200, ctx, accept)
            if method == "DELETE":
                options = await self.delete_options(request)
                obj, removed = cluster.delete(rt, namespace, name, options)
                if removed and not rt.return_deleted:
                    m = obj["metadata"]
                    details = {"name": name, "group": rt.group, "kind": rt.plural, "uid": m["uid"]}
                    return self.respond(request, success_status(details), warnings=ctx.warnings)
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            raise method_not_allowed()

        if sub == "status" and rt.status:
            if method == "GET":
                obj = cluster.get(rt, namespace, name)
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            if method == "PUT":
                body = await self.read_object(request)
                obj, _ = cluster.update(rt, namespace, name, body, ctx, subresource="status")
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            if method == "PATCH":
                obj, _ = await self.do_patch(request, rt, namespace, name, ctx, "status")
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            raise method_not_allowed()
        if sub == "finalize" and rt.gr == ("", "namespaces"):
            if method != "PUT":
                raise method_not_allowed()
            body = await self.read_object(request)
            obj = self.finalize_namespace(rt, name, body, ctx)
            return self.respond_object(request, rt, obj, 200, ctx, accept)
        if sub == "scale" and rt.scale is not None:
            if method == "GET":
                return self.respond(request, cluster.get_scale(rt, namespace, name))
            if method == "PUT":
                body = await self.read_object(request)
                scale = cluster.update_scale(rt, namespace, name, body, ctx)
                return self.respond(request, scale, warnings=ctx.warnings)
            if method == "PATCH":
                raw = await self.read_body(request)
                content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
                scale = cluster.patch_scale(rt, namespace, name, content_type, raw, ctx)
                return self.respond(request, scale, warnings=ctx.warnings)
            raise method_not_allowed()
        if sub == "log" and rt.log:
            if method != "GET":
                raise method_not_allowed()
            return await self.serve_log(request, rt, namespace or "", name)
        raise not_found_path()

    def finalize_namespace(self, rt: ResourceType, name: str, body: Any, ctx: Ctx) -> Obj:
        wanted = as_list(as_dict(as_dict(body).get("spec")).get("finalizers"))

        def change(obj: Obj) -> None:
            obj.setdefault("spec", {})["finalizers"] = wanted

        # spec is server-owned on ordinary updates; finalize writes it directly
        stored = self.cluster._stored(rt, "", name)
        obj = copy.deepcopy(stored)
        change(obj)
        if obj == stored:
            return rt.present(stored)
        return rt.present(self.cluster.commit(rt, obj, stored))

    async def do_patch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        ctx: Ctx,
        subresource: str | None,
    ) -> tuple[Obj, bool]:
        raw = await self.read_body(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        return self.cluster.patch(rt, namespace, name, content_type, raw, ctx, subresource)

    async def delete_options(self, request: web.Request) -> DeleteOptions:
        q = request.query
        options = DeleteOptions()
        raw = await self.read_body(request)
        body: Any = {}
        if raw.strip():
            body = parse_json(raw)
            if not isinstance(body, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        grace = body.get("gracePeriodSeconds")
        if q.get("gracePeriodSeconds") is not None:
            grace = _int(q.get("gracePeriodSeconds"), "gracePeriodSeconds")
        if grace is not None and not isinstance(grace, int):
            raise bad_request("gracePeriodSeconds must be an integer")
        options.grace_period = grace
        policy = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = body.get("orphanDependents")
        if q.get("orphanDependents") is not None:
            orphan = _bool(q.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if orphan else "Background"
        options.propagation = policy
        preconditions = as_dict(body.get("preconditions"))
        options.precondition_uid = preconditions.get("uid")
        options.precondition_rv = preconditions.get("resourceVersion")
        dry_run = list(q.getall("dryRun", [])) + list(as_list(body.get("dryRun")))
        options.dry_run = "All" in dry_run
        return options

    def respond_object(
        self,
        request: web.Request,
        rt: ResourceType,
        obj: Obj,
        status: int,
        ctx: Ctx,
        accept: Accept,
    ) -> web.Response:
        from devcluster import tables

        if accept.table is not None:
            include = request.query.get("includeObject", "Metadata")
            table = tables.to_table(rt, [obj], {}, include, accept.table)
            return self.respond(request, table, status, ctx.warnings)
        if accept.partial is not None:
            return self.respond(
                request, partial_metadata(obj, accept.partial), status, ctx.warnings
            )
        return self.respond(request, obj, status, ctx.warnings, accept)

    def serve_list(
        self, request: web.Request, rt: ResourceType, namespace: str | None, accept: Accept
    ) -> web.Response:
        from devcluster import tables

        q = request.query
        limit = _int(q.get("limit"), "limit")
        items, list_meta = self.cluster.list_objects(
            rt,
            namespace,
            label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"),
            limit=limit if limit and limit > 0 else None,
            continue_token=q.get("continue"),
        )
        if accept.table is not None:
            include = q.get("includeObject", "Metadata")
            return self.respond(
                request, tables.to_table(rt, items, list_meta, include, accept.table)
            )
        if accept.partial is not None:
            return self.respond(
                request,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": accept.partial,
                    "metadata": list_meta,
                    "items": [partial_metadata(i, accept.partial) for i in items],
                },
            )
        result = {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": list_meta,
            "items": items,
        }
        return self.respond(request, result, accept=accept)

    # ---- watch

    async def serve_watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        accept: Accept,
    ) -> web.StreamResponse:
        from devcluster import tables

        q = request.query
        field_selector = q.get("fieldSelector")
        if name is not None:
            by_name = f"metadata.name={name}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        matches = self.cluster.matcher(rt, q.get("labelSelector"), field_selector)
        rv_text = q.get("resourceVersion")
        since: int | None = None
        if rv_text not in (None, "", "0"):
            try:
                since = int(str(rv_text))
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {rv_text!r}") from exc
        timeout = _int(q.get("timeoutSeconds"), "timeoutSeconds")
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        send_initial = _bool(q.get("sendInitialEvents"))
        store = self.cluster.store
        include = q.get("includeObject", "Metadata")
        headers_sent = False

        def render(obj: Obj) -> Obj:
            nonlocal headers_sent
            if accept.table is not None:
                table = tables.to_table(
                    rt, [obj], {}, include, accept.table, headers=not headers_sent
                )
                headers_sent = True
                return table
            if accept.partial is not None:
                return partial_metadata(obj, accept.partial)
            return obj

        response = web.StreamResponse(status=200)
        response.content_type = JSON_TYPE
        response.enable_chunked_encoding()
        initial: list[Obj] = []
        backlog: list[StoreEvent] = []
        try:
            if since is None or send_initial:
                initial = [rt.present(o) for o in store.items(rt.gr, namespace)]
                watcher, _ = store.watch(rt.gr, namespace, None)
            else:
                watcher, backlog = store.watch(rt.gr, namespace, since)
        except TooOldResourceVersionError as exc:
            await response.prepare(request)
            error = status_object(410, "Expired", str(exc))
            await response.write(dumps({"type": "ERROR", "object": error}) + b"\n")
            await response.write_eof()
            return response
        closed = asyncio.Event()
        self._streams.add(closed)
        try:
            await response.prepare(request)

            def line(kind: str, obj: Obj) -> bytes:
                return dumps({"type": kind, "object": render(obj)}) + b"\n"

            async def send(kind: str, obj: Obj) -> None:
                await response.write(line(kind, obj))

            # One write per batch of events, not per event: under load the per-write
            # cost, not the encoding, is what makes a watch fall behind.
            chunk: list[bytes] = []
            for obj in initial:
                if matches(obj):
                    chunk.append(line("ADDED", obj))
                    if len(chunk) >= WATCH_BATCH:
                        await response.write(b"".join(chunk))
                        chunk.clear()
            if chunk:
                await response.write(b"".join(chunk))
            if send_initial and bookmarks:
                mark = self.bookmark(rt, store.resource_version)
                mark["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                await response.write(dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
            for past in backlog:
                out = self.filter_event(rt, past, matches)
                if out is not None:
                    await send(*out)
            loop = asyncio.get_running_loop()
            limit = float(timeout) if timeout and timeout > 0 else self.max_watch_seconds
            deadline = loop.time() + limit
            next_bookmark = loop.time() + self.bookmark_interval
            transport = request.transport
            while not closed.is_set():
                current = loop.time()
                if current >= deadline:
                    break
                if bookmarks and current >= next_bookmark:
                    mark = self.bookmark(rt, store.resource_version)
                    await response.write(dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
                    next_bookmark = current + self.bookmark_interval
                if transport is None or transport.is_closing():
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline, current + 1.0)
                if watcher.queue.empty():
                    try:
                        event = await asyncio.wait_for(
                            watcher.queue.get(), max(0.01, wait - current)
                        )
                    except TimeoutError:
                        continue
                else:
                    event = watcher.queue.get_nowait()
                batch = [event]
                while len(batch) < WATCH_BATCH and not watcher.queue.empty():
                    batch.append(watcher.queue.get_nowait())
                lines = []
                for item in batch:
                    if item is None:
                        break
                    out = self.filter_event(rt, item, matches)
                    if out is not None:
                        lines.append(line(*out))
                if lines:
                    await response.write(b"".join(lines))
                if None in batch:
                    break
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            store.unwatch(watcher)
            self._streams.discard(closed)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    @staticmethod
    def bookmark(rt: ResourceType, rv: int) -> Obj:
        return {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(rv)},
        }

    @staticmethod
    def filter_event(
        rt: ResourceType, event: StoreEvent, matches: Callable[[Obj], bool]
    ) -> tuple[str, Obj] | None:
        obj = rt.present(event.obj)
        if event.type == "ADDED":
            return ("ADDED", obj) if matches(obj) else None
        if event.type == "DELETED":
            return ("DELETED", obj) if matches(rt.present(event.old or event.obj)) else None
        new_match = matches(obj)
        old_match = event.old is not None and matches(rt.present(event.old))
        if new_match and old_match:
            return ("MODIFIED", obj)
        if new_match:
            return ("ADDED", obj)
        if old_match:
            return ("DELETED", obj)
        return None

    # ---- logs

    async def serve_log(
        self, request: web.Request, rt: ResourceType, namespace: str, name: str
    ) -> web.StreamResponse:
        q = request.query
        pod = self.cluster.get(rt, namespace, name)
        spec = as_dict(pod.get("spec"))
        containers = [str(as_dict(c).get("name")) for c in as_list(spec.get("containers"))]
        init = [str(as_dict(c).get("name")) for c in as_list(spec.get("initContainers"))]
        container = q.get("container")
        if not container:
            default = as_dict(pod["metadata"].get("annotations")).get(
                "kubectl.kubernetes.io/default-container"
            )
            if len(containers) == 1:
                container = containers[0]
            elif default in containers:
                container = default
            else:
                message = (
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]"
                )
                if init:
                    message += f" or one of the init containers: [{' '.join(init)}]"
                raise bad_request(message)
        if container not in containers + init:
            raise bad_request(f"container {container} is not valid for pod {name}")
        state_dir = self.cluster.state_dir
        uid = pod["metadata"]["uid"]
        previous = _bool(q.get("previous"))
        if state_dir is None:
            raise bad_request(f'container "{container}" in pod "{name}" is not available')
        if previous:
            path = paths.previous_log_file(state_dir, namespace, name, uid, container)
            if not path.exists():
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
        else:
            path = paths.container_log_file(state_dir, namespace, name, uid, container)
            if not path.exists():
                reason = "ContainerCreating"
                for status in as_list(
                    as_dict(pod.get("status")).get("containerStatuses")
                ) + as_list(as_dict(pod.get("status")).get("initContainerStatuses")):
                    if as_dict(status).get("name") == container:
                        waiting = as_dict(as_dict(status.get("state")).get("waiting"))
                        reason = waiting.get("reason") or reason
                if as_dict(pod.get("status")).get("phase") in ("Succeeded", "Failed"):
                    raise bad_request(f'container "{container}" in pod "{name}" has no logs')
                raise bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: {reason}'
                )
        tail = _int(q.get("tailLines"), "tailLines")
        limit_bytes = _int(q.get("limitBytes"), "limitBytes")
        timestamps = _bool(q.get("timestamps"))
        follow = _bool(q.get("follow")) and not previous
        data = path.read_bytes()
        offset = len(data)
        if tail is not None and tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail else b""
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        pending = b""

        async def emit(chunk: bytes, final: bool = False) -> bool:
            """Write; False once limitBytes is reached."""
            nonlocal sent, pending
            if timestamps:
                chunk = pending + chunk
                lines = chunk.split(b"\n")
                last = lines.pop()
                pending = b"" if final else last
                if final and last:
                    lines.append(last)
                stamp = now().strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
                chunk = b"".join(stamp + b" " + line + b"\n" for line in lines if line or final)
            if limit_bytes is not None:
                chunk = chunk[: max(0, limit_bytes - sent)]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            return limit_bytes is None or sent < limit_bytes

        closed = asyncio.Event()
        self._streams.add(closed)
        try:
            going = await emit(data, final=not follow)
            while follow and going and not closed.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    break
                if size > offset:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read(size - offset)
                    offset += len(chunk)
                    going = await emit(chunk)
                    continue
                if size < offset:
                    offset = 0  # truncated or replaced
                    continue
                if self._container_finished(rt, namespace, name, uid, container):
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        rest = handle.read()
                    await emit(rest, final=True)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), self.log_poll_interval)
            if timestamps and pending:
                await emit(b"", final=True)
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(closed)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    def _container_finished(
        self, rt: ResourceType, namespace: str, name: str, uid: str, container: str
    ) -> bool:
        pod = self.cluster.store.get(rt.gr, namespace, name)
        if pod is None or pod["metadata"].get("uid") != uid:
            return True
        status = as_dict(pod.get("status"))
        if status.get("phase") in ("Succeeded", "Failed"):
            return True
        for entry in as_list(status.get("containerStatuses")) + as_list(
            status.get("initContainerStatuses")
        ):
            if as_dict(entry).get("name") == container:
                state = as_dict(entry.get("state"))
                if "terminated" in state and not as_dict(entry).get("started"):
                    restart = as_dict(pod.get("spec")).get("restartPolicy", "Always")
                    if restart == "Never":
                        return True
        return False


def review(rt: ResourceType, body: Any) -> Obj:
    """devcluster has no authorization: every access review allows everything."""
    if not isinstance(body, dict):
        raise bad_request(f"{rt.kind} must be a JSON object")
    result = copy.deepcopy(body)
    result["apiVersion"], result["kind"] = rt.api_version, rt.kind
    result.setdefault("metadata", {})["creationTimestamp"] = None
    if rt.plural == "selfsubjectrulesreviews":
        everything = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
        result["status"] = {
            "resourceRules": [everything],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        result["status"] = {"allowed": True, "reason": "devcluster authorizes every request"}
    return result


def partial_metadata(obj: Obj, api_version: str) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata", {}),
    }


def too_large() -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}")


def not_found_path() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed() -> APIError:
    return APIError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


# =========================================================================== entry points


def create_app(
    state_dir: Path | None,
    *,
    persist: bool = False,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    simulate: bool = False,
    node_name: str = DEFAULT_NODE,
    history_size: int = 20000,
    bookmark_interval: float = 30.0,
    max_watch_seconds: float = 1800.0,
) -> web.Application:
    """The API server as an aiohttp application.

    `state_dir` is where the kubelet writes pod logs (served by `pods/log`); with
    `persist`, the objects are also snapshotted to `paths.snapshot_file(state_dir)` and
    reloaded from it. `simulate` deletes pods at once (no kubelet terminates them).
    The `Cluster` is available as `app[CLUSTER_KEY]`.
    """
    cluster = Cluster(
        state_dir,
        persist=persist,
        node_name=node_name,
        simulate=simulate,
        kubernetes_version=kubernetes_version,
        history_size=history_size,
    )
    server = APIServer(
        cluster, bookmark_interval=bookmark_interval, max_watch_seconds=max_watch_seconds
    )
    app = server.make_app()
    app[CLUSTER_KEY] = cluster
    app[SERVER_KEY] = server
    return app


CLUSTER_KEY = web.AppKey("devcluster.cluster", Cluster)
SERVER_KEY = web.AppKey("devcluster.apiserver", APIServer)


class ServerThread:
    """An API server on its own event loop in a daemon thread.

    `with ServerThread(state_dir) as server: ... server.url ...`
    """

    def __init__(self, state_dir: Path | None = None, host: str = "127.0.0.1", **options: Any):
        self.state_dir = state_dir
        self.host = host
        self.options = options
        self.url = ""
        self.app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def cluster(self) -> Cluster:
        assert self.app is not None
        return self.app[CLUSTER_KEY]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop and return its result (thread-safe access)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="devcluster-apiserver", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("the API server did not start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.app = create_app(self.state_dir, **self.options)
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start `app` on host:port; returns the runner (call `cleanup()`) and the URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    actual = runner.addresses[0][1]
    return runner, f"http://{host}:{actual}"
