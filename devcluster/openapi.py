"""The OpenAPI documents kubectl reads from the API server.

- `/openapi/v3` and `/openapi/v3/<api|apis/group>/<version>`: OpenAPI 3.0 documents per
  group version, with the CRDs' schemas (and minimal definitions of the built-in kinds),
  each schema marked with `x-kubernetes-group-version-kind`, and operations carrying
  `x-kubernetes-action`, `x-kubernetes-group-version-kind` and the `fieldValidation`
  query parameter. kubectl 1.27+ reads them for `explain`, to learn that the server
  validates fields itself (so `kubectl apply/create` send `fieldValidation=Strict`
  instead of validating client-side), and for apply patches.
  PATCH operations of built-in kinds do not list the strategic merge patch media type,
  so kubectl computes strategic merge patches from its compiled-in types rather than
  from these minimal definitions.
- `/openapi/v2`: kubectl (client-go) asks for it in protobuf only and cannot parse
  JSON there, so protobuf requests get a minimal gnostic `openapi.v2.Document`
  (swagger version and info, no definitions: kubectl then finds no schema for any kind
  and falls back to its compiled-in types). JSON requests get a Swagger 2.0 document
  with the CRD schemas as definitions.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from typing import Any

from devcluster.resources.registry import Registry
from devcluster.resources.types import ResourceType
from devcluster.store import Obj

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
SCALE = "io.k8s.api.autoscaling.v1.Scale"

BUILTIN_DOCS = {
    "Namespace": "Namespace provides a scope for Names. Use of multiple namespaces is optional.",
    "Pod": "Pod is a collection of containers that can run on a host. This resource is "
    "created by clients and scheduled onto hosts.",
    "Service": "Service is a named abstraction of software service (for example, mysql) "
    "consisting of local port (for example 3306) that the proxy listens on, and the "
    "selector that determines which pods will answer requests sent through the proxy.",
    "Endpoints": "Endpoints is a collection of endpoints that implement the actual service.",
    "Event": "Event is a report of an event somewhere in the cluster.",
    "ConfigMap": "ConfigMap holds configuration data for pods to consume.",
    "Secret": "Secret holds secret data of a certain type.",
    "ServiceAccount": "ServiceAccount binds together: a name, understood by users, and "
    "perhaps by peripheral systems, for an identity; a principal that can be authenticated "
    "and authorized; a set of secrets.",
    "PersistentVolumeClaim": "PersistentVolumeClaim is a user's request for and claim to a "
    "persistent volume.",
    "Node": "Node is a worker node in Kubernetes.",
    "Deployment": "Deployment enables declarative updates for Pods and ReplicaSets.",
    "ReplicaSet": "ReplicaSet ensures that a specified number of pod replicas are running at "
    "any given time.",
    "Lease": "Lease defines a lease concept.",
    "Role": "Role is a namespaced, logical grouping of PolicyRules that can be referenced "
    "as a unit by a RoleBinding.",
    "ClusterRole": "ClusterRole is a cluster level, logical grouping of PolicyRules that can "
    "be referenced as a unit by a RoleBinding or ClusterRoleBinding.",
    "RoleBinding": "RoleBinding references a role, but does not contain it.  It can reference "
    "a Role in the same namespace or a ClusterRole in the global namespace. It adds who "
    "information via Subjects and namespace information by which namespace it exists in.  "
    "RoleBindings in a given namespace only have effect in that namespace.",
    "ClusterRoleBinding": "ClusterRoleBinding references a ClusterRole, but not contain it.  "
    "It can reference a ClusterRole in the global namespace, and adds who information via "
    "Subject.",
    "CustomResourceDefinition": "CustomResourceDefinition represents a resource that should "
    "be exposed on the API server.",
}

API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
METADATA_DOC = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def _schema_prefix(rt: ResourceType) -> str:
    """`io.k8s.api.core.v1.` for the types a built-in kind's schema refers to."""
    group = rt.group.split(".")[0] if rt.group else "core"
    if rt.group == "apiextensions.k8s.io":
        return f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{rt.version}."
    return f"io.k8s.api.{group}.{rt.version}."


def schema_name(rt: ResourceType, kind: str | None = None) -> str:
    kind = kind or rt.kind
    if rt.is_custom:
        prefix = ".".join(reversed(rt.group.split(".")))
        return f"{prefix}.{rt.version}.{kind}"
    group = rt.group.split(".")[0] if rt.group else "core"
    return f"io.k8s.api.{group}.{rt.version}.{kind}"


def gvk(rt: ResourceType, kind: str | None = None) -> Obj:
    return {"group": rt.group, "version": rt.version, "kind": kind or rt.kind}


def _meta_schemas(ref_prefix: str) -> dict[str, Obj]:
    string = {"type": "string"}
    string_map = {"type": "object", "additionalProperties": {"type": "string", "default": ""}}
    return {
        OBJECT_META: {
            "description": "ObjectMeta is metadata that all persisted resources must have, "
            "which includes all objects users must create.",
            "type": "object",
            "properties": {
                "name": {**string, "description": "Name must be unique within a namespace."},
                "generateName": {
                    **string,
                    "description": "GenerateName is an optional prefix, used by the server, "
                    "to generate a unique name ONLY IF the Name field has not been provided.",
                },
                "namespace": {
                    **string,
                    "description": "Namespace defines the space within which each name must "
                    "be unique.",
                },
                "uid": {
                    **string,
                    "description": "UID is the unique in time and space value for this object.",
                },
                "resourceVersion": {
                    **string,
                    "description": "An opaque value that represents the internal version of "
                    "this object.",
                },
                "generation": {
                    "type": "integer",
                    "format": "int64",
                    "description": "A sequence number representing a specific generation of "
                    "the desired state.",
                },
                "creationTimestamp": {
                    **string,
                    "format": "date-time",
                    "description": "CreationTimestamp is a timestamp representing the server "
                    "time when this object was created.",
                },
                "deletionTimestamp": {
                    **string,
                    "format": "date-time",
                    "description": "DeletionTimestamp is RFC 3339 date and time at which this "
                    "resource will be deleted.",
                },
                "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                "labels": {
                    **string_map,
                    "description": "Map of string keys and values that "
                    "can be used to organize and categorize objects.",
                },
                "annotations": {
                    **string_map,
                    "description": "Annotations is an unstructured "
                    "key value map stored with a resource.",
                },
                "finalizers": {
                    "type": "array",
                    "items": {"type": "string", "default": ""},
                    "description": "Must be empty before the object is deleted from the registry.",
                    "x-kubernetes-list-type": "set",
                },
                "ownerReferences": {
                    "type": "array",
                    "description": "List of objects depended by this object.",
                    "items": {
                        "type": "object",
                        "required": ["apiVersion", "kind", "name", "uid"],
                        "properties": {
                            "apiVersion": string,
                            "kind": string,
                            "name": string,
                            "uid": string,
                            "controller": {"type": "boolean"},
                            "blockOwnerDeletion": {"type": "boolean"},
                        },
                    },
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "managedFields": {
                    "type": "array",
                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
        },
        LIST_META: {
            "type": "object",
            "properties": {
                "resourceVersion": string,
                "continue": string,
                "remainingItemCount": {"type": "integer", "format": "int64"},
            },
        },
        STATUS: {
            "type": "object",
            "properties": {
                "apiVersion": string,
                "kind": string,
                "metadata": {"allOf": [{"$ref": f"{ref_prefix}{LIST_META}"}], "default": {}},
                "status": string,
                "message": string,
                "reason": string,
                "code": {"type": "integer", "format": "int32"},
                "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
        },
        DELETE_OPTIONS: {
            "type": "object",
            "properties": {
                "apiVersion": string,
                "kind": string,
                "gracePeriodSeconds": {"type": "integer", "format": "int64"},
                "propagationPolicy": string,
                "orphanDependents": {"type": "boolean"},
                "dryRun": {"type": "array", "items": string},
                "preconditions": {
                    "type": "object",
                    "properties": {"uid": string, "resourceVersion": string},
                },
            },
        },
        SCALE: {
            "description": "Scale represents a scaling request for a resource.",
            "type": "object",
            "properties": {
                "apiVersion": {**string, "description": API_VERSION_DOC},
                "kind": {**string, "description": KIND_DOC},
                "metadata": {
                    "allOf": [{"$ref": f"{ref_prefix}{OBJECT_META}"}],
                    "default": {},
                    "description": METADATA_DOC,
                },
                "spec": {
                    "type": "object",
                    "properties": {"replicas": {"type": "integer", "format": "int32"}},
                },
                "status": {
                    "type": "object",
                    "properties": {
                        "replicas": {"type": "integer", "format": "int32"},
                        "selector": string,
                    },
                },
            },
            "x-kubernetes-group-version-kind": [
                {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            ],
        },
    }


# ---- built-in kinds, from the official Python client's models

#: The kubernetes client's model class of each built-in kind.
MODEL_CLASSES = {
    ("", "Namespace"): "V1Namespace",
    ("", "Pod"): "V1Pod",
    ("", "Service"): "V1Service",
    ("", "Endpoints"): "V1Endpoints",
    ("", "Event"): "CoreV1Event",
    ("", "ConfigMap"): "V1ConfigMap",
    ("", "Secret"): "V1Secret",
    ("", "ServiceAccount"): "V1ServiceAccount",
    ("", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("", "Node"): "V1Node",
    ("apps", "Deployment"): "V1Deployment",
    ("apps", "ReplicaSet"): "V1ReplicaSet",
    ("events.k8s.io", "Event"): "EventsV1Event",
    ("coordination.k8s.io", "Lease"): "V1Lease",
    ("discovery.k8s.io", "EndpointSlice"): "V1EndpointSlice",
    ("rbac.authorization.k8s.io", "Role"): "V1Role",
    ("rbac.authorization.k8s.io", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("apiextensions.k8s.io", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}
_CLASS_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)?V\d+(?:(?:alpha|beta)\d+)?(?=[A-Z])")
_PRIMITIVES: dict[str, Obj] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "format": "int64"},
    "float": {"type": "number", "format": "double"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "bytearray": {"type": "string", "format": "byte"},
    "object": {"x-kubernetes-preserve-unknown-fields": True},
}


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in text.splitlines())


@functools.lru_cache(maxsize=64)
def _model_schemas(class_name: str, prefix: str) -> tuple[str, dict[str, Obj]] | None:
    """Schemas of a client model and everything it refers to, or None without the client.

    Returns (the top schema's name, name -> schema); refs use `#/components/schemas/`.
    The result is shared: copy before changing it.
    """
    try:
        from kubernetes.client import models
    except ImportError:  # pragma: no cover - the client is a dependency
        return None
    schemas: dict[str, Obj] = {}
    ref_prefix = "#/components/schemas/"

    def name_of(cls_name: str) -> str:
        if cls_name == "V1ObjectMeta":
            return OBJECT_META
        if cls_name == "V1ListMeta":
            return LIST_META
        return prefix + _CLASS_PREFIX.sub("", cls_name)

    def type_schema(spec: str) -> Obj:
        spec = spec.strip()
        if spec.startswith("List[") and spec.endswith("]"):
            return {"type": "array", "items": type_schema(spec[5:-1])}
        if spec.startswith("Dict[") and spec.endswith("]"):
            value = spec[5:-1].split(",", 1)[1]
            return {"type": "object", "additionalProperties": type_schema(value)}
        if spec in _PRIMITIVES:
            return dict(_PRIMITIVES[spec])
        return {"$ref": ref_prefix + visit(spec)}

    def visit(cls_name: str) -> str:
        key = name_of(cls_name)
        if key in schemas or key in (OBJECT_META, LIST_META):
            return key
        cls = getattr(models, cls_name, None)
        if cls is None:
            schemas[key] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            return key
        schemas[key] = {}  # claimed first: types may refer to themselves
        properties: dict[str, Obj] = {}
        required = []
        fields = getattr(cls, "model_fields", {})
        for attr, spec in getattr(cls, "openapi_types", {}).items():
            json_name = cls.attribute_map.get(attr, attr)
            field = fields.get(attr)
            schema = type_schema(spec)
            description = getattr(field, "description", None)
            if description:
                schema = (
                    {"description": description, "allOf": [schema]}
                    if "$ref" in schema
                    else {"description": description, **schema}
                )
            if field is not None and field.is_required():
                required.append(json_name)
            properties[json_name] = schema
        node: Obj = {
            "description": _first_paragraph(cls.__doc__),
            "type": "object",
            "properties": properties,
        }
        if required:
            node["required"] = required
        schemas[key] = node
        return key

    top = visit(class_name)
    return top, schemas


def builtin_schemas(rt: ResourceType, prefix: str) -> tuple[str, dict[str, Obj]] | None:
    class_name = MODEL_CLASSES.get((rt.group, rt.kind))
    if class_name is None:
        return None
    return _model_schemas(class_name, prefix)


def object_schema(rt: ResourceType, ref_prefix: str) -> Obj:
    """The schema of one kind: the CRD's schema, or a minimal built-in definition."""
    if rt.schema is not None:
        schema = copy.deepcopy(rt.schema)
    else:
        schema = {
            "description": BUILTIN_DOCS.get(rt.kind, f"{rt.kind} is a Kubernetes object."),
            "type": "object",
            "properties": {},
        }
        if rt.top_fields is not None:
            for name in sorted(rt.top_fields - {"apiVersion", "kind", "metadata"}):
                schema["properties"][name] = {
                    "description": f"{name} of the {rt.kind}.",
                    "x-kubernetes-preserve-unknown-fields": True,
                }
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": API_VERSION_DOC}
    props["kind"] = {"type": "string", "description": KIND_DOC}
    props["metadata"] = {
        "allOf": [{"$ref": f"{ref_prefix}{OBJECT_META}"}],
        "default": {},
        "description": METADATA_DOC,
    }
    schema["x-kubernetes-group-version-kind"] = [gvk(rt)]
    return schema


def list_schema(rt: ResourceType, ref_prefix: str) -> Obj:
    return {
        "description": f"{rt.list_kind} is a list of {rt.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": API_VERSION_DOC},
            "kind": {"type": "string", "description": KIND_DOC},
            "metadata": {"allOf": [{"$ref": f"{ref_prefix}{LIST_META}"}], "default": {}},
            "items": {
                "type": "array",
                "items": {"$ref": f"{ref_prefix}{schema_name(rt)}"},
            },
        },
        "x-kubernetes-group-version-kind": [gvk(rt, rt.list_kind)],
    }


def _query(name: str, description: str, kind: str = "string") -> Obj:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, "uniqueItems": True},
    }


WRITE_PARAMS = [
    _query("dryRun", "When present, indicates that modifications should not be persisted."),
    _query("fieldManager", "fieldManager is a name associated with the actor or entity."),
    _query(
        "fieldValidation",
        "fieldValidation instructs the server on how to handle objects in the request "
        "containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
    ),
]
LIST_PARAMS = [
    _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
    _query("continue", "The continue option should be set when retrieving more results."),
    _query("resourceVersion", "resourceVersion sets a constraint on what resource versions a "
           "request may be served from."),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("watch", "Watch for changes to the described resources.", "boolean"),
    _query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type "
           "\"BOOKMARK\".", "boolean"),
]  # fmt: skip


def _content(ref: str) -> Obj:
    schema = {"schema": {"$ref": ref}}
    return {"application/json": schema, "application/yaml": schema}


def _operation(
    rt: ResourceType, action: str, ref: str, params: list[Obj], kind: str | None = None
) -> Obj:
    op: Obj = {
        "description": f"{action} {kind or rt.kind}",
        "operationId": f"{action}{rt.kind}",
        "tags": [rt.group or "core"],
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": _content(ref)}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt)
        if kind is None
        else {
            "group": "autoscaling" if kind == "Scale" else rt.group,
            "version": "v1" if kind == "Scale" else rt.version,
            "kind": kind,
        },
    }
    return op


def _patch_body(rt: ResourceType, strategic: bool) -> Obj:
    patch_schema = {"schema": {"type": "object"}}
    types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]
    if strategic:
        types.insert(2, "application/strategic-merge-patch+json")
    return {"content": dict.fromkeys(types, patch_schema), "required": True}


def paths_for(rt: ResourceType, ref_prefix: str) -> dict[str, Obj]:
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    ns_param = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    collection = (
        f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    )
    item = f"{collection}/{{name}}"
    obj_ref = f"{ref_prefix}{schema_name(rt)}"
    list_ref = f"{ref_prefix}{schema_name(rt, rt.list_kind)}"
    path_params = [ns_param] if rt.namespaced else []
    body = {"content": _content(obj_ref), "required": True}
    result: dict[str, Obj] = {}
    coll: Obj = {
        "parameters": path_params,
        "get": _operation(rt, "list", list_ref, LIST_PARAMS),
        "post": {**_operation(rt, "post", obj_ref, WRITE_PARAMS), "requestBody": body},
    }
    if "deletecollection" in rt.verbs:
        coll["delete"] = _operation(rt, "deletecollection", f"{ref_prefix}{STATUS}", LIST_PARAMS)
    result[collection] = coll
    result[item] = {
        "parameters": [name_param, *path_params],
        "get": _operation(rt, "get", obj_ref, []),
        "put": {**_operation(rt, "put", obj_ref, WRITE_PARAMS), "requestBody": body},
        "patch": {
            **_operation(
                rt, "patch", obj_ref, [*WRITE_PARAMS, _query("force", "Force apply.", "boolean")]
            ),
            "requestBody": _patch_body(rt, strategic=False),
        },
        "delete": _operation(rt, "delete", f"{ref_prefix}{STATUS}", WRITE_PARAMS),
    }
    if rt.status:
        result[f"{item}/status"] = {
            "parameters": [name_param, *path_params],
            "get": _operation(rt, "get", obj_ref, []),
            "put": {**_operation(rt, "put", obj_ref, WRITE_PARAMS), "requestBody": body},
            "patch": {
                **_operation(rt, "patch", obj_ref, WRITE_PARAMS),
                "requestBody": _patch_body(rt, strategic=False),
            },
        }
    if rt.scale is not None:
        scale_ref = f"{ref_prefix}{SCALE}"
        result[f"{item}/scale"] = {
            "parameters": [name_param, *path_params],
            "get": _operation(rt, "get", scale_ref, [], "Scale"),
            "put": {
                **_operation(rt, "put", scale_ref, WRITE_PARAMS, "Scale"),
                "requestBody": {"content": _content(scale_ref), "required": True},
            },
            "patch": {
                **_operation(rt, "patch", scale_ref, WRITE_PARAMS, "Scale"),
                "requestBody": _patch_body(rt, strategic=False),
            },
        }
    return result


def gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_document(registry: Registry, path: str, kubernetes_version: str = "") -> Obj | None:
    """The OpenAPI v3 document of one group version (cached until the types change)."""
    key = ("v3", path.strip("/"), kubernetes_version)
    if key not in registry.cache:
        registry.cache[key] = _v3_document(registry, path, kubernetes_version)
    document: Obj | None = registry.cache[key]
    return document


def _v3_document(registry: Registry, path: str, kubernetes_version: str) -> Obj | None:
    path = path.strip("/")
    parts = path.split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    types = [rt for rt in registry.resources(group, version) if not rt.virtual]
    if not types:
        return None
    ref_prefix = "#/components/schemas/"
    schemas: dict[str, Obj] = _meta_schemas(ref_prefix)
    paths: dict[str, Obj] = {}
    for rt in types:
        generated = None if rt.is_custom else builtin_schemas(rt, _schema_prefix(rt))
        if generated is not None:
            top, nested = generated
            for key, value in nested.items():
                if key != top:
                    schemas.setdefault(key, value)
            schema = copy.deepcopy(nested[top])
            schema["x-kubernetes-group-version-kind"] = [gvk(rt)]
            schema.setdefault("properties", {})["metadata"] = {
                "allOf": [{"$ref": f"{ref_prefix}{OBJECT_META}"}],
                "default": {},
                "description": METADATA_DOC,
            }
            schemas[schema_name(rt)] = schema
        else:
            schemas[schema_name(rt)] = object_schema(rt, ref_prefix)
        schemas[schema_name(rt, rt.list_kind)] = list_schema(rt, ref_prefix)
        paths.update(paths_for(rt, ref_prefix))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": kubernetes_version or "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document_hash(document: Obj) -> str:
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest().upper()


def v3_root(registry: Registry, kubernetes_version: str = "") -> Obj:
    key = ("v3-root", kubernetes_version)
    if key not in registry.cache:
        registry.cache[key] = _v3_root(registry, kubernetes_version)
    root: Obj = registry.cache[key]
    return root


def _v3_root(registry: Registry, kubernetes_version: str) -> Obj:
    paths: dict[str, Obj] = {}
    for group in registry.groups():
        for version in registry.versions(group):
            path = gv_path(group, version)
            document = v3_document(registry, path, kubernetes_version)
            if document is None:
                continue
            paths[path] = {
                "serverRelativeURL": f"/openapi/v3/{path}?hash={document_hash(document)}"
            }
    return {"paths": paths}


def _swagger_schema(schema: Any) -> Any:
    """An OpenAPI 3 schema as a Swagger 2.0 one (refs point at definitions)."""
    if isinstance(schema, dict):
        result = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                result[key] = value.replace("#/components/schemas/", "#/definitions/")
            elif key == "nullable":
                continue
            else:
                result[key] = _swagger_schema(value)
        return result
    if isinstance(schema, list):
        return [_swagger_schema(v) for v in schema]
    return schema


OPERATION_KEYS = (
    "description",
    "operationId",
    "tags",
    "x-kubernetes-action",
    "x-kubernetes-group-version-kind",
)


def v2_document(registry: Registry, kubernetes_version: str) -> Obj:
    definitions: dict[str, Obj] = {}
    paths: dict[str, Obj] = {}
    for group in registry.groups():
        for version in registry.versions(group):
            document = v3_document(registry, gv_path(group, version), kubernetes_version)
            if document is None:
                continue
            for name, schema in document["components"]["schemas"].items():
                definitions[name] = _swagger_schema(schema)
            for path, item in document["paths"].items():
                converted: Obj = {}
                for method, op in item.items():
                    if method == "parameters" or not isinstance(op, dict):
                        continue
                    params = [
                        {k: v for k, v in p.items() if k != "schema"} | {"type": "string"}
                        for p in op.get("parameters", [])
                    ]
                    converted[method] = {k: v for k, v in op.items() if k in OPERATION_KEYS} | {
                        "parameters": params,
                        "responses": {"200": {"description": "OK"}},
                    }
                paths[path] = converted
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": kubernetes_version},
        "paths": paths,
        "definitions": definitions,
    }


# ---- protobuf (gnostic openapi.v2.Document, the fields kubectl needs)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def v2_protobuf(registry: Registry, kubernetes_version: str) -> bytes:
    """`openapi.v2.Document{swagger: "2.0", info: {title, version}}`."""
    info = _field(1, b"Kubernetes") + _field(2, kubernetes_version.encode())
    return _field(1, b"2.0") + _field(2, info)
