"""Validation of rbac.authorization.k8s.io/v1 objects (pkg/apis/rbac/validation):
rules need verbs and either resources with apiGroups or nonResourceURLs (never both,
and never non-resource URLs in a namespaced Role); bindings need a roleRef of a
supported kind and name, which cannot change, and subjects of a known kind with a
name. Escalation checks (creating a Role or binding that grants more than the creator
holds) are not made: see docs/devcluster.md.
"""

from __future__ import annotations

from devcluster.resources.fields import Cause, invalid, required, unsupported
from devcluster.resources.types import Env, ResourceType, Strategy
from devcluster.store import Obj
from devcluster.values import as_dict, as_list

RBAC_GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def rule_causes(rules: object, path: str, namespaced: bool) -> list[Cause]:
    causes: list[Cause] = []
    for i, raw in enumerate(as_list(rules)):
        rule = as_dict(raw)
        at = f"{path}[{i}]"
        if not as_list(rule.get("verbs")):
            causes.append(required(f"{at}.verbs", "verbs must contain at least one value"))
        urls = as_list(rule.get("nonResourceURLs"))
        resources = as_list(rule.get("resources"))
        if urls:
            if namespaced:
                causes.append(
                    invalid(
                        f"{at}.nonResourceURLs",
                        urls,
                        "namespaced rules cannot apply to non-resource URLs",
                    )
                )
            if as_list(rule.get("apiGroups")) or resources or as_list(rule.get("resourceNames")):
                causes.append(
                    invalid(
                        f"{at}.nonResourceURLs",
                        urls,
                        "rules cannot apply to both regular resources and non-resource URLs",
                    )
                )
            continue
        if not as_list(rule.get("apiGroups")):
            causes.append(
                required(f"{at}.apiGroups", "resource rules must supply at least one api group")
            )
        if not resources:
            causes.append(
                required(f"{at}.resources", "resource rules must supply at least one resource")
            )
    return causes


class RoleStrategy(Strategy):
    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        return rule_causes(obj.get("rules"), "rules", rt.namespaced)


class BindingStrategy(Strategy):
    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        causes: list[Cause] = []
        ref = as_dict(obj.get("roleRef"))
        kinds = ("Role", "ClusterRole") if rt.namespaced else ("ClusterRole",)
        if ref.get("apiGroup") != RBAC_GROUP:
            causes.append(unsupported("roleRef.apiGroup", ref.get("apiGroup", ""), [RBAC_GROUP]))
        if ref.get("kind") not in kinds:
            causes.append(unsupported("roleRef.kind", ref.get("kind", ""), kinds))
        if not ref.get("name"):
            causes.append(required("roleRef.name"))
        for i, raw in enumerate(as_list(obj.get("subjects"))):
            subject = as_dict(raw)
            at = f"subjects[{i}]"
            if not subject.get("name"):
                causes.append(required(f"{at}.name"))
            kind = subject.get("kind")
            if kind not in SUBJECT_KINDS:
                causes.append(unsupported(f"{at}.kind", kind or "", SUBJECT_KINDS))
            elif kind != "ServiceAccount" and subject.get("apiGroup", RBAC_GROUP) != RBAC_GROUP:
                causes.append(unsupported(f"{at}.apiGroup", subject.get("apiGroup"), [RBAC_GROUP]))
            elif kind == "ServiceAccount" and subject.get("apiGroup"):
                causes.append(unsupported(f"{at}.apiGroup", subject.get("apiGroup"), [""]))
        if old is not None and as_dict(old.get("roleRef")) != ref:
            causes.append(invalid("roleRef", ref, "cannot change roleRef"))
        return causes

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        _default_subjects(obj)

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        _default_subjects(new)


def _default_subjects(obj: Obj) -> None:
    """rbac/v1 defaults: User and Group subjects get the RBAC apiGroup."""
    for subject in as_list(obj.get("subjects")):
        if isinstance(subject, dict) and subject.get("kind") in ("User", "Group"):
            subject.setdefault("apiGroup", RBAC_GROUP)
