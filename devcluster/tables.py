"""Server-side printing: `meta.k8s.io/v1` Tables, as `kubectl get` asks for them.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
rows; `-o wide` shows the priority-1 columns too. Custom resources use their CRD's
`additionalPrinterColumns` (a JSONPath subset: `.a.b`, `.a[0].b`) after `Name`, or
`Name` and `Age` when the CRD declares none, as in Kubernetes. Built-in kinds have the
columns Kubernetes prints for them (pods: READY STATUS RESTARTS AGE, IP NODE ... with
`-o wide`; services: TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE; ...), computed the same
way (the pod STATUS follows kubectl's rules: container waiting/terminated reasons,
Init:x/y, Terminating).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from devcluster.resources.jsonpath import json_path_get
from devcluster.resources.types import ResourceType
from devcluster.store import Obj, now, parse_time
from devcluster.values import as_dict, as_list

NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
AGE_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is "
    "in UTC."
)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any, reference: datetime | None = None) -> str:
    if not isinstance(timestamp, str):
        return "<unknown>"
    moment = parse_time(timestamp)
    if moment is None:
        return "<unknown>"
    return human_duration(((reference or now()) - moment).total_seconds())


def column(
    name: str, kind: str = "string", description: str = "", priority: int = 0, fmt: str = ""
) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


NAME_COLUMN = column("Name", "string", NAME_DOC, fmt="name")
AGE_COLUMN = column("Age", "string", AGE_DOC)


def _meta(obj: Obj) -> dict[str, Any]:
    return as_dict(obj.get("metadata"))


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name", ""))


def _age(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


# --------------------------------------------------------------------------- pods


def pod_row(pod: Obj) -> list[Any]:
    spec, status = as_dict(pod.get("spec")), as_dict(pod.get("status"))
    m = _meta(pod)
    restarts = 0
    ready = 0
    total = len(as_list(spec.get("containers")))
    reason = status.get("reason") or status.get("phase") or "Pending"
    last_restart: datetime | None = None

    def note_restart(entry: Obj) -> None:
        nonlocal last_restart
        finished = as_dict(as_dict(entry.get("lastState")).get("terminated")).get("finishedAt")
        moment = parse_time(finished) if isinstance(finished, str) else None
        if moment is not None and (last_restart is None or moment > last_restart):
            last_restart = moment

    initializing = False
    init_statuses = as_list(status.get("initContainerStatuses"))
    init_count = len(as_list(spec.get("initContainers")))
    for i, entry in enumerate(map(as_dict, init_statuses)):
        restarts += int(entry.get("restartCount") or 0)
        if entry.get("restartCount"):
            note_restart(entry)
        state = as_dict(entry.get("state"))
        terminated, waiting = as_dict(state.get("terminated")), as_dict(state.get("waiting"))
        if "terminated" in state and terminated.get("exitCode") == 0:
            continue
        if "terminated" in state:
            if terminated.get("reason"):
                reason = "Init:" + str(terminated["reason"])
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode')}"
        elif waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + str(waiting["reason"])
        else:
            reason = f"Init:{i}/{init_count}"
        initializing = True
        break
    initialized = any(
        as_dict(c).get("type") == "Initialized" and as_dict(c).get("status") == "True"
        for c in as_list(status.get("conditions"))
    )
    if not initializing or initialized:
        restarts = 0
        running = False
        for entry in map(as_dict, reversed(as_list(status.get("containerStatuses")))):
            restarts += int(entry.get("restartCount") or 0)
            if entry.get("restartCount"):
                note_restart(entry)
            state = as_dict(entry.get("state"))
            terminated, waiting = as_dict(state.get("terminated")), as_dict(state.get("waiting"))
            if waiting.get("reason"):
                reason = str(waiting["reason"])
            elif "terminated" in state and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif "terminated" in state:
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{terminated.get('exitCode')}"
            elif entry.get("ready") and "running" in state:
                running = True
                ready += 1
        if reason == "Completed" and running:
            ready_condition = any(
                as_dict(c).get("type") == "Ready" and as_dict(c).get("status") == "True"
                for c in as_list(status.get("conditions"))
            )
            reason = "Running" if ready_condition else "NotReady"
    if m.get("deletionTimestamp"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now() - last_restart).total_seconds())} ago)"
    gates = as_list(spec.get("readinessGates"))
    if gates:
        conditions = {
            as_dict(c).get("type"): as_dict(c).get("status")
            for c in as_list(status.get("conditions"))
        }
        passed = sum(1 for g in gates if conditions.get(as_dict(g).get("conditionType")) == "True")
        gates_text = f"{passed}/{len(gates)}"
    else:
        gates_text = "<none>"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _age(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_text,
    ]


POD_COLUMNS = [
    NAME_COLUMN,
    column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    column("Status", description="The aggregate status of the containers in this pod."),
    column(
        "Restarts",
        description="The number of times the containers in this pod have been restarted and "
        "when the last container in this pod has restarted.",
    ),
    AGE_COLUMN,
    column("IP", description="IP address allocated to the pod.", priority=1),
    column("Node", description="The node the pod is bound to.", priority=1),
    column("Nominated Node", description="The node the pod is nominated to.", priority=1),
    column("Readiness Gates", description="Pod readiness gates.", priority=1),
]

# --------------------------------------------------------------------------- services


def service_ports(spec: Obj) -> str:
    parts = []
    for port in map(as_dict, as_list(spec.get("ports"))):
        text = str(port.get("port"))
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def service_row(svc: Obj) -> list[Any]:
    spec = as_dict(svc.get("spec"))
    kind = spec.get("type", "ClusterIP")
    external = list(as_list(spec.get("externalIPs")))
    if kind == "ExternalName":
        external_text = str(spec.get("externalName") or "<none>")
    elif kind == "LoadBalancer":
        ingress = as_list(as_dict(as_dict(svc.get("status")).get("loadBalancer")).get("ingress"))
        ips = [str(as_dict(i).get("ip") or as_dict(i).get("hostname")) for i in ingress] + external
        external_text = ",".join(ips) if ips else "<pending>"
    else:
        external_text = ",".join(external) if external else "<none>"
    selector = as_dict(spec.get("selector"))
    return [
        _name(svc),
        kind,
        spec.get("clusterIP") or "<none>",
        external_text,
        service_ports(spec),
        _age(svc),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


SERVICE_COLUMNS = [
    NAME_COLUMN,
    column("Type", description="type determines how the Service is exposed."),
    column("Cluster-IP", description="clusterIP is the IP address of the service."),
    column("External-IP", description="externalIPs is a list of IP addresses."),
    column("Port(s)", description="The list of ports that are exposed by this service."),
    AGE_COLUMN,
    column("Selector", description="Route service traffic to pods with these labels.", priority=1),
]

# --------------------------------------------------------------------------- others


def endpoints_text(obj: Obj) -> str:
    entries = []
    for subset in map(as_dict, as_list(obj.get("subsets"))):
        ports = [as_dict(p).get("port") for p in as_list(subset.get("ports"))] or [None]
        for address in map(as_dict, as_list(subset.get("addresses"))):
            for port in ports:
                entries.append(f"{address.get('ip')}:{port}" if port else str(address.get("ip")))
    if not entries:
        return "<none>"
    if len(entries) > 3:
        return ",".join(entries[:3]) + f" + {len(entries) - 3} more..."
    return ",".join(entries)


def slice_endpoints_text(obj: Obj) -> str:
    addresses = [
        str(a) for e in as_list(obj.get("endpoints")) for a in as_list(as_dict(e).get("addresses"))
    ]
    if not addresses:
        return "<unset>"
    if len(addresses) > 3:
        return ",".join(addresses[:3]) + f" + {len(addresses) - 3} more..."
    return ",".join(addresses)


ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def event_row(event: Obj) -> list[Any]:
    m = _meta(event)
    involved = as_dict(event.get("involvedObject") or event.get("regarding"))
    last = event.get("lastTimestamp") or event.get("deprecatedLastTimestamp")
    first = event.get("firstTimestamp") or event.get("deprecatedFirstTimestamp")
    if not last:
        last = event.get("eventTime") or m.get("creationTimestamp")
    if not first:
        first = event.get("eventTime") or m.get("creationTimestamp")
    count = event.get("count") or event.get("deprecatedCount") or 1
    series = as_dict(event.get("series"))
    if series.get("count"):
        count = series["count"]
        last = series.get("lastObservedTime") or last
    last_text = age(last)
    if isinstance(count, int) and count > 1:
        last_text = f"{last_text} (x{count} over {age(first)})"
    source = as_dict(event.get("source") or event.get("deprecatedSource"))
    source_text = str(source.get("component") or event.get("reportingComponent") or "")
    if source.get("host"):
        source_text += f", {source['host']}"
    return [
        last_text,
        event.get("type", ""),
        event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        source_text,
        str(event.get("message") or event.get("note") or "").strip(),
        age(first),
        count,
        _name(event),
    ]


EVENT_COLUMNS = [
    column("Last Seen", description="Time since the event was last seen."),
    column("Type", description="Type of this event."),
    column("Reason", description="Short, machine understandable string giving the reason."),
    column("Object", description="The object this Event is about."),
    column("Subobject", description="The sub-object this Event is about.", priority=1),
    column("Source", description="The component reporting this event.", priority=1),
    column("Message", description="A human-readable description of the status."),
    column("First Seen", description="The time the event was first recorded.", priority=1),
    column("Count", kind="integer", description="How many times it occurred.", priority=1),
    column("Name", description=NAME_DOC, priority=1, fmt="name"),
]


def node_row(node: Obj) -> list[Any]:
    status = as_dict(node.get("status"))
    ready = "Unknown"
    for condition in map(as_dict, as_list(status.get("conditions"))):
        if condition.get("type") == "Ready":
            ready = "Ready" if condition.get("status") == "True" else "NotReady"
    if as_dict(node.get("spec")).get("unschedulable"):
        ready += ",SchedulingDisabled"
    roles = sorted(
        key.split("/", 1)[1]
        for key in as_dict(_meta(node).get("labels"))
        if key.startswith("node-role.kubernetes.io/")
    )
    addresses = {
        as_dict(a).get("type"): as_dict(a).get("address") for a in as_list(status.get("addresses"))
    }
    info = as_dict(status.get("nodeInfo"))
    return [
        _name(node),
        ready,
        ",".join(roles) or "<none>",
        _age(node),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


NODE_COLUMNS = [
    NAME_COLUMN,
    column("Status", description="The status of the node"),
    column("Roles", description="The roles of the node"),
    AGE_COLUMN,
    column("Version", description="Kubelet Version reported by the node."),
    column("Internal-IP", description="List of addresses reachable to the node.", priority=1),
    column("External-IP", description="List of addresses reachable to the node.", priority=1),
    column("OS-Image", description="OS Image reported by the node.", priority=1),
    column("Kernel-Version", description="Kernel Version reported by the node.", priority=1),
    column("Container-Runtime", description="Container Runtime Version.", priority=1),
]


def claim_row(claim: Obj) -> list[Any]:
    spec, status = as_dict(claim.get("spec")), as_dict(claim.get("status"))
    modes = [ACCESS_MODES.get(str(m), str(m)) for m in as_list(status.get("accessModes"))]
    return [
        _name(claim),
        status.get("phase", "Pending"),
        spec.get("volumeName", ""),
        as_dict(status.get("capacity")).get("storage", ""),
        ",".join(modes),
        spec.get("storageClassName") or "<unset>",
        spec.get("volumeAttributesClassName") or "<unset>",
        _age(claim),
        spec.get("volumeMode", "Filesystem"),
    ]


CLAIM_COLUMNS = [
    NAME_COLUMN,
    column("Status", description="The phase of the claim."),
    column("Volume", description="The binding reference to the PersistentVolume."),
    column("Capacity", description="The actual resources of the underlying volume."),
    column("Access Modes", description="The access modes the volume has."),
    column("StorageClass", description="Name of the StorageClass."),
    column("VolumeAttributesClass", description="Name of the VolumeAttributesClass."),
    AGE_COLUMN,
    column("VolumeMode", description="The volume mode.", priority=1),
]


def _template_columns(obj: Obj) -> list[str]:
    """CONTAINERS, IMAGES and SELECTOR of a Deployment or ReplicaSet (`-o wide`)."""
    spec = as_dict(obj.get("spec"))
    containers = [
        as_dict(c)
        for c in as_list(as_dict(as_dict(spec.get("template")).get("spec")).get("containers"))
    ]
    selector = as_dict(spec.get("selector"))
    terms = [f"{k}={v}" for k, v in sorted(as_dict(selector.get("matchLabels")).items())]
    for expression in map(as_dict, as_list(selector.get("matchExpressions"))):
        values = ",".join(str(v) for v in as_list(expression.get("values")))
        terms.append(
            f"{expression.get('key')} {str(expression.get('operator')).lower()} ({values})"
        )
    return [
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        ",".join(terms) or "<none>",
    ]


def deployment_row(obj: Obj) -> list[Any]:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    ready = f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}"
    counts = [status.get("updatedReplicas", 0), status.get("availableReplicas", 0)]
    return [_name(obj), ready, *counts, _age(obj), *_template_columns(obj)]


def replica_set_row(obj: Obj) -> list[Any]:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    counts = [spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0)]
    return [_name(obj), *counts, _age(obj), *_template_columns(obj)]


TEMPLATE_COLUMNS = [
    column("Containers", description="Names of each container in the template.", priority=1),
    column("Images", description="Images referenced by each container in the template.",
           priority=1),
    column("Selector", description="Label selector for pods.", priority=1),
]  # fmt: skip
DEPLOYMENT_COLUMNS = [
    NAME_COLUMN,
    column("Ready", description="Number of the pod with ready state"),
    column("Up-to-date", "integer", "Total number of non-terminated pods targeted by this "
           "deployment that have the desired template spec."),
    column("Available", "integer", "Total number of available pods (ready for at least "
           "minReadySeconds) targeted by this deployment."),
    AGE_COLUMN,
    *TEMPLATE_COLUMNS,
]  # fmt: skip
REPLICA_SET_COLUMNS = [
    NAME_COLUMN,
    column("Desired", "integer", "Replicas is the number of desired replicas."),
    column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    column("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE_COLUMN,
    *TEMPLATE_COLUMNS,
]

Spec = tuple[list[Obj], Callable[[Obj], list[Any]]]

# --------------------------------------------------------------------------- RBAC

ROLE_COLUMNS = [NAME_COLUMN, column("Created At", "date", AGE_DOC)]
BINDING_COLUMNS = [
    NAME_COLUMN,
    column("Role", description="Role referenced by this binding"),
    AGE_COLUMN,
    column("Users", description="Users in the binding", priority=1),
    column("Groups", description="Groups in the binding", priority=1),
    column("ServiceAccounts", description="ServiceAccounts in the binding", priority=1),
]


def role_row(obj: Obj) -> list[Any]:
    return [_name(obj), _meta(obj).get("creationTimestamp", "")]


def binding_row(obj: Obj) -> list[Any]:
    """As kube-apiserver prints bindings: Kind/name of the role, subjects by kind."""
    ref = as_dict(obj.get("roleRef"))
    subjects = [as_dict(s) for s in as_list(obj.get("subjects"))]

    def named(kind: str) -> str:
        return ", ".join(str(s.get("name", "")) for s in subjects if s.get("kind") == kind)

    accounts = ", ".join(
        f"{s.get('namespace', '')}/{s.get('name', '')}"
        for s in subjects
        if s.get("kind") == "ServiceAccount"
    )
    return [
        _name(obj),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age(obj),
        named("User"),
        named("Group"),
        accounts,
    ]


BUILTIN: dict[tuple[str, str], Spec] = {
    ("rbac.authorization.k8s.io", "roles"): (ROLE_COLUMNS, role_row),
    ("rbac.authorization.k8s.io", "clusterroles"): (ROLE_COLUMNS, role_row),
    ("rbac.authorization.k8s.io", "rolebindings"): (BINDING_COLUMNS, binding_row),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): (BINDING_COLUMNS, binding_row),
    ("", "pods"): (POD_COLUMNS, pod_row),
    ("", "services"): (SERVICE_COLUMNS, service_row),
    ("apps", "deployments"): (DEPLOYMENT_COLUMNS, deployment_row),
    ("apps", "replicasets"): (REPLICA_SET_COLUMNS, replica_set_row),
    ("", "namespaces"): (
        [NAME_COLUMN, column("Status", description="The status of the namespace"), AGE_COLUMN],
        lambda o: [_name(o), as_dict(o.get("status")).get("phase", ""), _age(o)],
    ),
    ("", "configmaps"): (
        [NAME_COLUMN, column("Data", "integer", "The number of entries"), AGE_COLUMN],
        lambda o: [
            _name(o),
            len(as_dict(o.get("data"))) + len(as_dict(o.get("binaryData"))),
            _age(o),
        ],
    ),
    ("", "secrets"): (
        [
            NAME_COLUMN,
            column("Type", description="The type of the secret"),
            column("Data", "integer", "The number of entries"),
            AGE_COLUMN,
        ],
        lambda o: [_name(o), o.get("type", "Opaque"), len(as_dict(o.get("data"))), _age(o)],
    ),
    ("", "serviceaccounts"): (
        [NAME_COLUMN, column("Secrets", "integer", "The number of secrets"), AGE_COLUMN],
        lambda o: [_name(o), len(as_list(o.get("secrets"))), _age(o)],
    ),
    ("", "endpoints"): (
        [NAME_COLUMN, column("Endpoints", description="Endpoints of the service"), AGE_COLUMN],
        lambda o: [_name(o), endpoints_text(o), _age(o)],
    ),
    ("", "events"): (EVENT_COLUMNS, event_row),
    ("events.k8s.io", "events"): (EVENT_COLUMNS, event_row),
    ("", "nodes"): (NODE_COLUMNS, node_row),
    ("", "persistentvolumeclaims"): (CLAIM_COLUMNS, claim_row),
    ("discovery.k8s.io", "endpointslices"): (
        [
            NAME_COLUMN,
            column("AddressType", description="Type of address carried by this EndpointSlice."),
            column("Ports", description="Ports allocated for the endpoints."),
            column("Endpoints", description="Endpoints in this slice."),
            AGE_COLUMN,
        ],
        lambda o: [
            _name(o),
            o.get("addressType", ""),
            ",".join(str(as_dict(p).get("port")) for p in as_list(o.get("ports"))) or "<unset>",
            slice_endpoints_text(o),
            _age(o),
        ],
    ),
    ("coordination.k8s.io", "leases"): (
        [NAME_COLUMN, column("Holder", description="The holder of the lease"), AGE_COLUMN],
        lambda o: [_name(o), as_dict(o.get("spec")).get("holderIdentity", ""), _age(o)],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [NAME_COLUMN, column("Created At", "date", AGE_DOC)],
        lambda o: [_name(o), _meta(o).get("creationTimestamp", "")],
    ),
}


def cell_value(value: Any, kind: str) -> Any:
    if kind == "date":
        return age(value) if isinstance(value, str) else None
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return json.dumps(value)
        return json.dumps(value, separators=(",", ":"))
    if kind == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value


def custom_spec(rt: ResourceType) -> Spec:
    if not rt.printer_columns:
        return (
            [NAME_COLUMN, column("Age", "date", AGE_DOC)],
            lambda o: [_name(o), _age(o)],
        )
    columns = [NAME_COLUMN]
    printers = []
    for col in rt.printer_columns:
        kind = str(col.get("type", "string"))
        columns.append(
            column(
                str(col.get("name", "")),
                kind,
                str(col.get("description", "")),
                int(col.get("priority", 0) or 0),
                str(col.get("format", "")),
            )
        )
        printers.append((str(col.get("jsonPath", "")), kind))

    def row(obj: Obj) -> list[Any]:
        cells: list[Any] = [_name(obj)]
        for path, kind in printers:
            found, value = json_path_get(obj, path)
            cells.append(cell_value(value, kind) if found and value is not None else None)
        return cells

    return columns, row


def table_spec(rt: ResourceType) -> Spec:
    if rt.is_custom:
        return custom_spec(rt)
    spec = BUILTIN.get((rt.group, rt.plural))
    if spec is not None:
        return spec
    return [NAME_COLUMN, AGE_COLUMN], lambda o: [_name(o), _age(o)]


def row_object(obj: Obj, include: str, api_version: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def to_table(
    rt: ResourceType,
    objects: list[Obj],
    list_meta: Obj,
    include_object: str = "Metadata",
    api_version: str = "meta.k8s.io/v1",
    *,
    headers: bool = True,
) -> Obj:
    columns, row_fn = table_spec(rt)
    rows = []
    for obj in objects:
        row: Obj = {"cells": row_fn(obj)}
        embedded = row_object(obj, include_object, api_version)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": dict(list_meta),
        "columnDefinitions": columns if headers else [],
        "rows": rows,
    }
