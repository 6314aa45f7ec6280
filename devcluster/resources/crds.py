"""Custom resources and CustomResourceDefinitions: admission of custom resources
through their CRD's schema, and the CRD strategy (defaults, status, validation).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from devcluster.resources.fields import (
    DNS1035_LABEL,
    DNS1123_LABEL,
    LABEL_1035_MSG,
    LABEL_1123_MSG,
    Cause,
    duplicate,
    invalid,
    required,
    unsupported,
)
from devcluster.resources.types import BUILTIN_GROUPS, Env, ResourceType, Strategy
from devcluster.store import Obj, bad_request, rfc3339
from devcluster.values import as_dict, as_list


class CustomResourceStrategy(Strategy):
    """Admission of custom resources through their CRD schema (devcluster.schema.admission)."""

    def _admit(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        from devcluster.schema import admission

        if rt.schema is None:
            return []
        strict = env.field_validation == "Strict"
        result = admission.admit(rt.schema, obj, old, strict=strict)
        if result.strict_decoding_error is not None:
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"{result.strict_decoding_error}"
            )
        unknown = {f'unknown field "{path}"' for path in result.unknown_fields}
        for warning in result.warnings:
            if warning not in unknown or env.field_validation == "Warn":
                env.warnings.append(warning)
        admitted = result.obj
        if admitted is not obj:
            obj.clear()
            obj.update(copy.deepcopy(admitted))
        return [
            from_field_error(e)
            for e in result.errors
            if not (strict and e.reason == "FieldValueForbidden" and e.message in unknown)
        ]

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        pass

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        return self._admit(env, rt, obj, old)

    def validate_status(self, env: Env, rt: ResourceType, obj: Obj, old: Obj) -> list[Cause]:
        return self._admit(env, rt, obj, old)


FIELD_REASONS = {
    "Required": "FieldValueRequired",
    "Invalid": "FieldValueInvalid",
    "NotSupported": "FieldValueNotSupported",
    "Unsupported": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Duplicate": "FieldValueDuplicate",
    "TooLong": "FieldValueTooLong",
    "TooMany": "FieldValueTooMany",
    "NotFound": "FieldValueNotFound",
    "TypeInvalid": "FieldValueTypeInvalid",
}


def from_field_error(error: Any) -> Cause:
    """A `devcluster.schema.FieldError` as a Status cause."""
    path = str(getattr(error, "field", "") or "")
    reason = str(getattr(error, "reason", "") or "FieldValueInvalid")
    reason = FIELD_REASONS.get(reason, reason)
    if not reason.startswith("FieldValue"):
        reason = "FieldValueInvalid"
    if hasattr(error, "body"):
        return Cause(path, reason, str(error.body()))
    text = str(error.describe()) if hasattr(error, "describe") else str(error)
    body = text[len(path) + 2 :] if path and text.startswith(path + ": ") else text
    return Cause(path, reason, body)


# ---- CustomResourceDefinitions


CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRD_RESERVED_GROUPS = frozenset(BUILTIN_GROUPS)


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: GA > beta > alpha, then by numbers (higher first)."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)  # non-Kubernetes versions sort last
    major = int(match.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor)


class CRDStrategy(Strategy):
    def _default(self, obj: Obj) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        names = spec.get("names")
        if isinstance(names, dict):
            if names.get("kind"):
                names.setdefault("listKind", f"{names['kind']}List")
            if names.get("kind") and not names.get("singular"):
                names["singular"] = str(names["kind"]).lower()
        spec.setdefault("conversion", {"strategy": "None"})
        for version in as_list(spec.get("versions")):
            if isinstance(version, dict):
                version.setdefault("served", True)

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        self._default(obj)
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if CRD_CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CRD_CLEANUP_FINALIZER)
        obj["status"] = crd_status(obj, None)

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        self._default(new)
        new["status"] = crd_status(new, old)

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        return validate_crd(env, obj, old)


def crd_status(crd: Obj, old: Obj | None) -> Obj:
    spec = as_dict(crd.get("spec"))
    now = rfc3339()
    old_status = as_dict((old or {}).get("status"))
    old_conditions = {c.get("type"): c for c in map(as_dict, as_list(old_status.get("conditions")))}

    def condition(kind: str, reason: str, message: str) -> Obj:
        previous = old_conditions.get(kind)
        if previous and previous.get("status") == "True":
            return previous
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }

    stored = list(as_list(old_status.get("storedVersions")))
    for version in as_list(spec.get("versions")):
        if (
            isinstance(version, dict)
            and version.get("storage")
            and version.get("name") not in stored
        ):
            stored.append(version.get("name"))
    conditions = [
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    if crd.get("metadata", {}).get("deletionTimestamp"):
        conditions.append(
            {
                "type": "Terminating",
                "status": "True",
                "lastTransitionTime": now,
                "reason": "InstanceDeletionInProgress",
                "message": "CustomResource deletion is in progress",
            }
        )
    return {
        "conditions": conditions,
        "acceptedNames": copy.deepcopy(as_dict(spec.get("names"))),
        "storedVersions": stored,
    }


def validate_crd(env: Env, obj: Obj, old: Obj | None) -> list[Cause]:
    from devcluster.schema import structural

    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    group = spec.get("group")
    names = as_dict(spec.get("names"))
    plural, kind = names.get("plural"), names.get("kind")
    name = obj["metadata"].get("name")
    if not group:
        causes.append(required("spec.group"))
    elif not isinstance(group, str) or "." not in group:
        causes.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    elif group in CRD_RESERVED_GROUPS:
        causes.append(invalid("spec.group", group, "group is reserved for built-in APIs"))
    if not plural:
        causes.append(required("spec.names.plural"))
    elif not isinstance(plural, str) or not DNS1123_LABEL.match(plural):
        causes.append(invalid("spec.names.plural", plural, LABEL_1123_MSG))
    if not kind:
        causes.append(required("spec.names.kind"))
    singular = names.get("singular")
    if singular and (not isinstance(singular, str) or not DNS1123_LABEL.match(singular)):
        causes.append(invalid("spec.names.singular", singular, LABEL_1123_MSG))
    for i, short in enumerate(as_list(names.get("shortNames"))):
        if not isinstance(short, str) or not DNS1123_LABEL.match(short):
            causes.append(invalid(f"spec.names.shortNames[{i}]", short, LABEL_1123_MSG))
    if plural and group and name != f"{plural}.{group}":
        causes.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        causes.append(unsupported("spec.scope", scope, ("Cluster", "Namespaced")))
    versions = as_list(spec.get("versions"))
    if not versions:
        causes.append(
            required("spec.versions", "must have exactly one version marked as storage version")
        )
    storage = [v for v in versions if as_dict(v).get("storage")]
    if versions and len(storage) != 1:
        causes.append(
            invalid(
                "spec.versions",
                [str(as_dict(v).get("name")) for v in storage],
                "must have exactly one version marked as storage version",
            )
        )
    seen: set[str] = set()
    for i, version in enumerate(versions):
        version = as_dict(version)
        path = f"spec.versions[{i}]"
        vname = version.get("name")
        if not vname:
            causes.append(required(f"{path}.name"))
        elif not isinstance(vname, str) or not DNS1035_LABEL.match(vname):
            causes.append(invalid(f"{path}.name", vname, LABEL_1035_MSG))
        elif vname in seen:
            causes.append(duplicate(f"{path}.name", vname))
        seen.add(str(vname))
        schema = as_dict(version.get("schema")).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            causes.append(required(f"{path}.schema.openAPIV3Schema", "schemas are required"))
        else:
            for problem in structural.structural_problems(schema):
                causes.append(
                    Cause(
                        f"{path}.schema.openAPIV3Schema",
                        "FieldValueInvalid",
                        f'Invalid value: "object": {problem}',
                    )
                )
        sub = as_dict(version.get("subresources"))
        scale = sub.get("scale")
        if isinstance(scale, dict):
            for key in ("specReplicasPath", "statusReplicasPath"):
                value = scale.get(key)
                if not value:
                    causes.append(required(f"{path}.subresources.scale.{key}"))
                elif not isinstance(value, str) or not value.startswith(
                    ".spec" if key.startswith("spec") else ".status"
                ):
                    prefix = ".spec" if key.startswith("spec") else ".status"
                    causes.append(
                        invalid(
                            f"{path}.subresources.scale.{key}",
                            value,
                            f"should be a json path under {prefix}",
                        )
                    )
    if old is not None:
        old_spec = as_dict(old.get("spec"))
        if old_spec.get("scope") != scope:
            causes.append(invalid("spec.scope", scope, "field is immutable"))
        if old_spec.get("group") != group:
            causes.append(invalid("spec.group", group, "field is immutable"))
    if not causes:
        causes += _crd_name_conflicts(env, obj)
    return causes


def _crd_name_conflicts(env: Env, crd: Obj) -> list[Cause]:
    spec = crd["spec"]
    group, names = spec["group"], spec["names"]
    mine = {names["plural"], *(names.get("shortNames") or [])}
    for other in env.store.items(("apiextensions.k8s.io", "customresourcedefinitions")):
        if other["metadata"]["name"] == crd["metadata"]["name"]:
            continue
        ospec = as_dict(other.get("spec"))
        if ospec.get("group") != group:
            continue
        onames = as_dict(ospec.get("names"))
        if onames.get("kind") == names["kind"]:
            return [invalid("spec.names.kind", names["kind"], "is already in use")]
        if mine & {onames.get("plural"), *(onames.get("shortNames") or [])}:
            return [invalid("spec.names.plural", names["plural"], "is already in use")]
    return []
