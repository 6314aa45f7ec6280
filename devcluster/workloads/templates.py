"""Pod templates, ReplicaSets made from Deployments and pods made from ReplicaSets
(pure), after pkg/controller/deployment/util and controller_utils.go.

- A Deployment's ReplicaSet for one template is `<deployment>-<hash>`, its selector and
  template labels extended with `pod-template-hash: <hash>`. The hash is FNV-32a over
  the template (and the Deployment's `status.collisionCount`), written with the same
  alphabet Kubernetes uses; the input is the template's canonical JSON rather than Go's
  printed struct, so the values differ from a real cluster's.
- The new ReplicaSet is the oldest one whose template equals the Deployment's, the hash
  label aside.
- Revisions: the new ReplicaSet's `deployment.kubernetes.io/revision` is one more than
  the highest old revision; a ReplicaSet that comes back (a rollback) keeps its former
  revisions in `deployment.kubernetes.io/revision-history`. The Deployment's own
  annotations are copied to it, except those of kubectl and of the controller.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from devcluster.store import Obj
from devcluster.values import as_dict
from devcluster.workloads.rollout import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
)

POD_TEMPLATE_HASH = "pod-template-hash"
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString's
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
NOT_COPIED = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, ROLLBACK_TO}
)
#: The longest revision-history annotation kept (the controller's default).
MAX_HISTORY_CHARS = 2000


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """The pod-template-hash of a template (controller.ComputeHash's shape)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    return "".join(HASH_ALPHABET[ord(c) % len(HASH_ALPHABET)] for c in str(fnv32a(data)))


def _without_hash(template: Any) -> Obj:
    result = copy.deepcopy(as_dict(template))
    metadata = as_dict(result.get("metadata"))
    labels = dict(as_dict(metadata.get("labels")))
    labels.pop(POD_TEMPLATE_HASH, None)
    result["metadata"] = {**metadata, "labels": labels}
    result["metadata"].pop("creationTimestamp", None)  # always the zero time
    return result


def equal_ignore_hash(a: Any, b: Any) -> bool:
    return _without_hash(a) == _without_hash(b)


def find_new_replica_set(deployment: Obj, oldest_first: list[Obj]) -> Obj | None:
    template = as_dict(deployment.get("spec")).get("template")
    for rs in oldest_first:
        if equal_ignore_hash(as_dict(rs.get("spec")).get("template"), template):
            return rs
    return None


def controller_ref(obj: Obj) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    """A controller reference to `owner` (metav1.NewControllerRef)."""
    m = owner["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": m["name"],
        "uid": m["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def new_replica_set(deployment: Obj, replicas: int, collision_count: int) -> Obj:
    """The ReplicaSet of a Deployment's current template, sized `replicas`."""
    spec = as_dict(deployment.get("spec"))
    template = copy.deepcopy(as_dict(spec.get("template")))
    pod_hash = template_hash(template, collision_count)
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**as_dict(metadata.get("labels")), POD_TEMPLATE_HASH: pod_hash}
    selector = copy.deepcopy(as_dict(spec.get("selector")))
    selector["matchLabels"] = {**as_dict(selector.get("matchLabels")), POD_TEMPLATE_HASH: pod_hash}
    m = deployment["metadata"]
    rs_spec: Obj = {"replicas": replicas, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{m['name']}-{pod_hash}",
            "namespace": m["namespace"],
            "labels": dict(metadata["labels"]),
            "ownerReferences": [owner_reference(deployment, "apps/v1", "Deployment")],
        },
        "spec": rs_spec,
    }


def set_replicas_annotations(annotations: dict[str, str], desired: int, ceiling: int) -> bool:
    """desired-replicas and max-replicas (replicas + maxSurge); True when changed."""
    wanted = {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(ceiling)}
    changed = any(annotations.get(k) != v for k, v in wanted.items())
    annotations.update(wanted)
    return changed


def set_new_annotations(
    deployment: Obj,
    annotations: dict[str, str],
    new_revision: int,
    exists: bool,
    desired: int,
    ceiling: int,
) -> bool:
    """SetNewReplicaSetAnnotations on the new ReplicaSet's annotations; True when changed."""
    changed = False
    for key, value in as_dict(deployment["metadata"].get("annotations")).items():
        if key not in NOT_COPIED and annotations.get(key) != value:
            annotations[key] = value
            changed = True
    old_text = annotations.get(REVISION, "")
    try:
        old_revision = int(old_text) if old_text else 0
    except ValueError:
        return False
    if old_revision < new_revision:
        annotations[REVISION] = str(new_revision)
        changed = True
        if old_text:  # it served an earlier revision: a rollback to it
            _append_history(annotations, old_text)
    if not exists and set_replicas_annotations(annotations, desired, ceiling):
        changed = True
    return changed


def _append_history(annotations: dict[str, str], revision: str) -> None:
    history = [r for r in annotations.get(REVISION_HISTORY, "").split(",") if r]
    history.append(revision)
    while len(",".join(history)) > MAX_HISTORY_CHARS and len(history) > 1:
        history.pop(0)
    annotations[REVISION_HISTORY] = ",".join(history)


def pod_from_template(rs: Obj) -> Obj:
    """A new pod of a ReplicaSet (controller.GetPodFromTemplate)."""
    template = as_dict(as_dict(rs.get("spec")).get("template"))
    metadata = as_dict(template.get("metadata"))
    pod_meta: Obj = {
        "generateName": f"{rs['metadata']['name']}-",
        "ownerReferences": [owner_reference(rs, "apps/v1", "ReplicaSet")],
    }
    for key in ("labels", "annotations", "finalizers"):
        if metadata.get(key):
            pod_meta[key] = copy.deepcopy(metadata[key])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(as_dict(template.get("spec"))),
    }
