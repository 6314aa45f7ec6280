"""Kubernetes protobuf request bodies, decoded to JSON for the few kinds that need it.

kubectl's typed clients (`kubectl create configmap|secret|namespace|serviceaccount|
deployment|role|clusterrole|rolebinding|clusterrolebinding|token`, `kubectl auth can-i`
and `whoami`) and client-go's DeleteOptions (Helm's release storage deletes its Secrets
so) send Kubernetes protobuf: the magic `k8s\0`, then a
runtime.Unknown {typeMeta{apiVersion, kind}, raw} whose `raw` is the object in the
field numbering of k8s.io/api's generated.proto. These few kinds are decoded to JSON;
others answer 415 UnsupportedMediaType.
"""

from __future__ import annotations

import base64
from typing import Any

from devcluster.store import APIError, Obj, bad_request

PROTOBUF_MAGIC = b"k8s\x00"
#: A message description: field number -> (JSON name, type, sub-message or None, repeated).
#: Types: string, int (a plain int), pint (an *int: kept when 0), bool (a *bool), flag (a
#: plain bool), intorstring, map_ss (map<string, string>), map_sb (map<string, bytes>,
#: base64 in JSON), message.
Proto = dict[int, tuple[str, str, Any, bool]]

_OWNER_REFERENCE: Proto = {
    1: ("kind", "string", None, False),
    3: ("name", "string", None, False),
    4: ("uid", "string", None, False),
    5: ("apiVersion", "string", None, False),
    6: ("controller", "bool", None, False),
    7: ("blockOwnerDeletion", "bool", None, False),
}
_OBJECT_META: Proto = {
    1: ("name", "string", None, False),
    2: ("generateName", "string", None, False),
    3: ("namespace", "string", None, False),
    5: ("uid", "string", None, False),
    6: ("resourceVersion", "string", None, False),
    7: ("generation", "int", None, False),
    10: ("deletionGracePeriodSeconds", "int", None, False),
    11: ("labels", "map_ss", None, False),
    12: ("annotations", "map_ss", None, False),
    13: ("ownerReferences", "message", _OWNER_REFERENCE, True),
    14: ("finalizers", "string", None, True),
}
_OBJECT_REFERENCE: Proto = {
    1: ("kind", "string", None, False),
    2: ("namespace", "string", None, False),
    3: ("name", "string", None, False),
    4: ("uid", "string", None, False),
    5: ("apiVersion", "string", None, False),
    6: ("resourceVersion", "string", None, False),
    7: ("fieldPath", "string", None, False),
}
_SERVICE_PORT: Proto = {
    1: ("name", "string", None, False),
    2: ("protocol", "string", None, False),
    3: ("port", "int", None, False),
    4: ("targetPort", "intorstring", None, False),
    5: ("nodePort", "int", None, False),
    6: ("appProtocol", "string", None, False),
}
_SERVICE_SPEC: Proto = {
    1: ("ports", "message", _SERVICE_PORT, True),
    2: ("selector", "map_ss", None, False),
    3: ("clusterIP", "string", None, False),
    4: ("type", "string", None, False),
    5: ("externalIPs", "string", None, True),
    7: ("sessionAffinity", "string", None, False),
    8: ("loadBalancerIP", "string", None, False),
    9: ("loadBalancerSourceRanges", "string", None, True),
    10: ("externalName", "string", None, False),
    11: ("externalTrafficPolicy", "string", None, False),
    12: ("healthCheckNodePort", "int", None, False),
    13: ("publishNotReadyAddresses", "flag", None, False),
    17: ("ipFamilyPolicy", "string", None, False),
    18: ("clusterIPs", "string", None, True),
    19: ("ipFamilies", "string", None, True),
    20: ("allocateLoadBalancerNodePorts", "bool", None, False),
    21: ("loadBalancerClass", "string", None, False),
    22: ("internalTrafficPolicy", "string", None, False),
}
# What `kubectl create deployment NAME --image=... [--replicas] [--port] [-- COMMAND]` sends.
_LABEL_SELECTOR: Proto = {
    1: ("matchLabels", "map_ss", None, False),
    2: (
        "matchExpressions",
        "message",
        {
            1: ("key", "string", None, False),
            2: ("operator", "string", None, False),
            3: ("values", "string", None, True),
        },
        True,
    ),
}
_CONTAINER: Proto = {
    1: ("name", "string", None, False),
    2: ("image", "string", None, False),
    3: ("command", "string", None, True),
    4: ("args", "string", None, True),
    5: ("workingDir", "string", None, False),
    6: (
        "ports",
        "message",
        {
            1: ("name", "string", None, False),
            2: ("hostPort", "int", None, False),
            3: ("containerPort", "int", None, False),
            4: ("protocol", "string", None, False),
            5: ("hostIP", "string", None, False),
        },
        True,
    ),
    7: (
        "env",
        "message",
        {1: ("name", "string", None, False), 2: ("value", "string", None, False)},
        True,
    ),
    8: ("resources", "message", {}, False),  # what kubectl sends: empty
    14: ("imagePullPolicy", "string", None, False),
}
_POD_SPEC: Proto = {
    2: ("containers", "message", _CONTAINER, True),
    3: ("restartPolicy", "string", None, False),
    4: ("terminationGracePeriodSeconds", "pint", None, False),
    6: ("dnsPolicy", "string", None, False),
    7: ("nodeSelector", "map_ss", None, False),
    8: ("serviceAccountName", "string", None, False),
    20: ("initContainers", "message", _CONTAINER, True),
}
_DEPLOYMENT_SPEC: Proto = {
    1: ("replicas", "pint", None, False),
    2: ("selector", "message", _LABEL_SELECTOR, False),
    3: (
        "template",
        "message",
        {1: ("metadata", "message", _OBJECT_META, False), 2: ("spec", "message", _POD_SPEC, False)},
        False,
    ),
    4: (
        "strategy",
        "message",
        {
            1: ("type", "string", None, False),
            2: (
                "rollingUpdate",
                "message",
                {
                    1: ("maxUnavailable", "intorstring", None, False),
                    2: ("maxSurge", "intorstring", None, False),
                },
                False,
            ),
        },
        False,
    ),
    5: ("minReadySeconds", "int", None, False),
    6: ("revisionHistoryLimit", "pint", None, False),
    7: ("paused", "flag", None, False),
    9: ("progressDeadlineSeconds", "pint", None, False),
}
_RESOURCE_ATTRIBUTES: Proto = {
    1: ("namespace", "string", None, False),
    2: ("verb", "string", None, False),
    3: ("group", "string", None, False),
    4: ("version", "string", None, False),
    5: ("resource", "string", None, False),
    6: ("subresource", "string", None, False),
    7: ("name", "string", None, False),
}
_NON_RESOURCE_ATTRIBUTES: Proto = {
    1: ("path", "string", None, False),
    2: ("verb", "string", None, False),
}
_POLICY_RULE: Proto = {
    1: ("verbs", "string", None, True),
    2: ("apiGroups", "string", None, True),
    3: ("resources", "string", None, True),
    4: ("resourceNames", "string", None, True),
    5: ("nonResourceURLs", "string", None, True),
}
_BINDING: Proto = {
    1: ("metadata", "message", _OBJECT_META, False),
    2: (
        "subjects",
        "message",
        {
            1: ("kind", "string", None, False),
            2: ("apiGroup", "string", None, False),
            3: ("name", "string", None, False),
            4: ("namespace", "string", None, False),
        },
        True,
    ),
    3: (
        "roleRef",
        "message",
        {
            1: ("apiGroup", "string", None, False),
            2: ("kind", "string", None, False),
            3: ("name", "string", None, False),
        },
        False,
    ),
}
PROTOBUF_KINDS: dict[str, Proto] = {
    "Role": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("rules", "message", _POLICY_RULE, True),
    },
    "ClusterRole": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("rules", "message", _POLICY_RULE, True),
        3: (
            "aggregationRule",
            "message",
            {1: ("clusterRoleSelectors", "message", _LABEL_SELECTOR, True)},
            False,
        ),
    },
    "RoleBinding": _BINDING,
    "ClusterRoleBinding": _BINDING,
    "TokenRequest": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: (
            "spec",
            "message",
            {
                1: ("audiences", "string", None, True),
                3: (
                    "boundObjectRef",
                    "message",
                    {
                        1: ("kind", "string", None, False),
                        2: ("apiVersion", "string", None, False),
                        3: ("name", "string", None, False),
                        4: ("uid", "string", None, False),
                    },
                    False,
                ),
                4: ("expirationSeconds", "pint", None, False),
            },
            False,
        ),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: (
            "spec",
            "message",
            {
                1: ("resourceAttributes", "message", _RESOURCE_ATTRIBUTES, False),
                2: ("nonResourceAttributes", "message", _NON_RESOURCE_ATTRIBUTES, False),
            },
            False,
        ),
    },
    "SelfSubjectRulesReview": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("spec", "message", {1: ("namespace", "string", None, False)}, False),
    },
    "SelfSubjectReview": {1: ("metadata", "message", _OBJECT_META, False)},
    # client-go's typed clients send it with every DELETE (Helm's release storage does).
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "pint", None, False),
        2: (
            "preconditions",
            "message",
            {1: ("uid", "string", None, False), 2: ("resourceVersion", "string", None, False)},
            False,
        ),
        3: ("orphanDependents", "bool", None, False),
        4: ("propagationPolicy", "string", None, False),
        5: ("dryRun", "string", None, True),
    },
    "Deployment": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("spec", "message", _DEPLOYMENT_SPEC, False),
    },
    "Service": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("spec", "message", _SERVICE_SPEC, False),
    },
    "ConfigMap": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("data", "map_ss", None, False),
        3: ("binaryData", "map_sb", None, False),
        4: ("immutable", "bool", None, False),
    },
    "Secret": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("data", "map_sb", None, False),
        3: ("type", "string", None, False),
        4: ("stringData", "map_ss", None, False),
        5: ("immutable", "bool", None, False),
    },
    "Namespace": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("spec", "message", {1: ("finalizers", "string", None, True)}, False),
    },
    "ServiceAccount": {
        1: ("metadata", "message", _OBJECT_META, False),
        2: ("secrets", "message", _OBJECT_REFERENCE, True),
        3: ("imagePullSecrets", "message", {1: ("name", "string", None, False)}, True),
        4: ("automountServiceAccountToken", "bool", None, False),
    },
}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _wire_fields(data: bytes) -> list[tuple[int, int, Any]]:
    fields = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if at > len(data):
            raise ValueError("truncated field")
        fields.append((number, wire, value))
    return fields


def _decode_message(data: bytes, proto: Proto) -> Obj:
    result: Obj = {}
    for number, wire, value in _wire_fields(data):
        spec = proto.get(number)
        if spec is None:
            continue
        name, kind, sub, repeated = spec
        decoded: Any
        if kind in ("map_ss", "map_sb"):
            entry = {n: v for n, _, v in _wire_fields(value)}
            key = bytes(entry.get(1, b"")).decode()
            raw = bytes(entry.get(2, b""))
            text = raw.decode() if kind == "map_ss" else base64.b64encode(raw).decode()
            result.setdefault(name, {})[key] = text
            continue
        if kind == "string":
            decoded = bytes(value).decode()
        elif kind in ("bool", "flag"):  # *bool (kept when false) or bool (omitted)
            decoded = bool(value)
            if kind == "flag" and not decoded:
                continue
        elif kind in ("int", "pint"):  # int (omitted when 0) or *int (kept)
            decoded = value - (1 << 64) if value >= 1 << 63 else value
            if kind == "pint":
                result[name] = decoded
                continue
        elif kind == "intorstring":
            parts = {n: v for n, _, v in _wire_fields(bytes(value))}
            decoded = bytes(parts.get(3, b"")).decode() if parts.get(1) == 1 else parts.get(2, 0)
        else:
            decoded = _decode_message(bytes(value), sub)
        if repeated:
            result.setdefault(name, []).append(decoded)
        elif decoded not in ("", 0) or isinstance(decoded, bool):
            result[name] = decoded  # Go marshals empty strings and zeros; JSON omits them
        del wire
    return result


def decode_protobuf(data: bytes) -> Obj:
    """A Kubernetes protobuf request body as JSON (for the kinds in PROTOBUF_KINDS)."""
    if not data.startswith(PROTOBUF_MAGIC):
        raise bad_request("the protobuf body lacks the Kubernetes magic prefix")
    try:
        envelope = {n: v for n, _, v in _wire_fields(data[len(PROTOBUF_MAGIC) :])}
        type_meta = {n: bytes(v).decode() for n, _, v in _wire_fields(envelope.get(1, b""))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        proto = PROTOBUF_KINDS.get(kind)
        if proto is None:
            raise APIError(
                415,
                "UnsupportedMediaType",
                f"devcluster cannot decode {kind or 'this object'} from protobuf; send "
                "application/json",
            )
        obj = _decode_message(bytes(envelope.get(2, b"")), proto)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding the protobuf body: {exc}") from exc
    obj["apiVersion"], obj["kind"] = api_version, kind
    return obj
