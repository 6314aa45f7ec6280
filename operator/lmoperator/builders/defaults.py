"""Cluster-wide defaults for the pods the operator makes (pure).

A cluster admin sets them once, as flags of `elasticlm operator` (the Helm chart's
`workerDefaults` and `serverDefaults` values): the image, pull policy and resources of
training workers (the image also of their rendezvous store) and of model servers, and
a pod-level securityContext laid over the restricted one the builders write. A
resource's own `spec.worker` always wins: a default fills only what it leaves out.

The defaults are applied to the typed resource before anything is built from it
(`with_defaults`), so the builders, the checks of `pod_problems` and the CPU threads
derived from resources all see one spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from lmoperator.api.common import PullPolicy, ResourceRequirements, WorkerSpec
from lmoperator.api.service import LMService
from lmoperator.api.trainingjob import LMTrainingJob
from lmoperator.builders.merge import merge_pod

# The fields of a PodSecurityContext that may be defaulted. Anything else (an unknown
# key, windowsOptions, ...) is a typo or out of scope, and is refused at startup.
POD_SECURITY_FIELDS = frozenset(
    {
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "fsGroup",
        "fsGroupChangePolicy",
        "supplementalGroups",
        "supplementalGroupsPolicy",
        "seccompProfile",
        "seLinuxOptions",
        "appArmorProfile",
        "sysctls",
    }
)
_ID_FIELDS = ("runAsUser", "runAsGroup", "fsGroup")


class InvalidDefaultError(ValueError):
    """A default given to the operator is not usable; the message names the flag."""


@dataclass(frozen=True, eq=False)
class PodDefaults:
    """Defaults of one kind of pod. Compared and hashed by identity: one object lives for
    the operator's lifetime, and parsed resources are cached per object."""

    image: str | None = None
    image_pull_policy: PullPolicy | None = None
    resources: ResourceRequirements | None = None
    pod_security_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Defaults:
    """`worker`: training workers (and their rendezvous store); `server`: model servers."""

    worker: PodDefaults = field(default_factory=PodDefaults)
    server: PodDefaults = field(default_factory=PodDefaults)


NO_DEFAULTS = Defaults()


def parse_resources(text: str, flag: str) -> ResourceRequirements:
    """`{"requests": {"cpu": "1"}, "limits": {...}}` as JSON; InvalidDefaultError naming
    `flag` when it is not."""
    document = _json_object(text, flag)
    try:
        return ResourceRequirements.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidDefaultError(
            f"{flag}: {problems} (expected JSON such as "
            '{"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}})'
        ) from exc


def parse_pod_security_context(text: str, flag: str) -> dict[str, Any]:
    """A pod-level securityContext as JSON that keeps pods non-root; InvalidDefaultError
    naming `flag` and the field otherwise."""
    document = _json_object(text, flag)
    unknown = sorted(set(document) - POD_SECURITY_FIELDS)
    if unknown:
        raise InvalidDefaultError(
            f"{flag}: unknown field(s) {', '.join(unknown)}; allowed: "
            + ", ".join(sorted(POD_SECURITY_FIELDS))
        )
    if document.get("runAsNonRoot") is False:
        raise InvalidDefaultError(
            f"{flag}: runAsNonRoot must stay true (the pods run under the restricted Pod "
            "Security profile); remove it"
        )
    for name in _ID_FIELDS:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidDefaultError(f"{flag}: {name} must be a non-negative integer")
        if value == 0 and name == "runAsUser":
            raise InvalidDefaultError(f"{flag}: runAsUser 0 (root) is not allowed")
    profile = document.get("seccompProfile")
    if profile is not None and (
        not isinstance(profile, Mapping)
        or profile.get("type") not in ("RuntimeDefault", "Localhost")
    ):
        raise InvalidDefaultError(
            f"{flag}: seccompProfile.type must be RuntimeDefault or Localhost "
            "(Unconfined is not allowed by the restricted profile)"
        )
    return document


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidDefaultError(f"{flag}: not valid JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(document, dict):
        raise InvalidDefaultError(f"{flag}: must be a JSON object, got {type(document).__name__}")
    return document


def apply_to_worker(worker: WorkerSpec, defaults: PodDefaults) -> WorkerSpec:
    """`worker` with what it leaves out taken from `defaults` (the same object when
    nothing is filled in)."""
    update: dict[str, Any] = {}
    if worker.image is None and defaults.image:
        update["image"] = defaults.image
    if worker.image_pull_policy is None and defaults.image_pull_policy is not None:
        update["image_pull_policy"] = defaults.image_pull_policy
    if worker.resources is None and defaults.resources is not None:
        update["resources"] = defaults.resources
    if defaults.pod_security_context:
        # Under the user's own template: explicit settings there win, field by field.
        base = {"spec": {"securityContext": dict(defaults.pod_security_context)}}
        update["pod_template"] = merge_pod(base, worker.pod_template or {})
    return worker.model_copy(update=update) if update else worker


Resource = TypeVar("Resource", LMTrainingJob, LMService)


def with_defaults(resource: Resource, defaults: Defaults) -> Resource:
    """The resource as the builders should see it: its `spec.worker` completed from the
    defaults of its kind of pod."""
    pod_defaults = defaults.server if isinstance(resource, LMService) else defaults.worker
    worker = apply_to_worker(resource.spec.worker, pod_defaults)
    if worker is resource.spec.worker:
        return resource
    spec = resource.spec.model_copy(update={"worker": worker})
    return resource.model_copy(update={"spec": spec})
