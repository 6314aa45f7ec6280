"""RBAC authorization, as Kubernetes' RBAC authorizer decides
(plugin/pkg/auth/authorizer/rbac/rbac.go, pkg/apis/rbac/v1/evaluation_helpers.go).

A request is allowed when the user is in `system:masters` (kube-apiserver's privileged
group authorizer runs before RBAC), or when a rule reached through a binding that
applies to the user allows it: every ClusterRoleBinding, then the RoleBindings of the
request's namespace. A rule allows a resource request when its verbs, apiGroups,
resources (`pods`, `pods/log`, `*`, `*/scale`; `pods/*` matches nothing) and
resourceNames (none means all) all match; a non-resource request when its verbs and
nonResourceURLs (exact, `*`, or a prefix ending in `*`) match. A ServiceAccount
subject without a namespace means the binding's namespace. A binding whose role is
missing is skipped and named in the reason of a denial, as Kubernetes does.

The decision comes with Kubernetes' reason text (`RBAC: allowed by ...` for an
allowance, `RBAC: role.rbac.authorization.k8s.io "x" not found` when a binding points at
nothing) and a denial becomes the 403 Status kube-apiserver writes
(staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go,
`forbiddenMessage`; apimachinery's `errors.NewForbidden`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from devcluster.auth.requestinfo import Attributes
from devcluster.auth.users import SYSTEM_MASTERS, UserInfo, service_account_username
from devcluster.store import APIError, GroupResource, Obj, Store
from devcluster.values import as_dict, as_list

GROUP = "rbac.authorization.k8s.io"
ROLES: GroupResource = (GROUP, "roles")
CLUSTER_ROLES: GroupResource = (GROUP, "clusterroles")
ROLE_BINDINGS: GroupResource = (GROUP, "rolebindings")
CLUSTER_ROLE_BINDINGS: GroupResource = (GROUP, "clusterrolebindings")


# --------------------------------------------------------------------------- rules


def _strings(rule: Obj, key: str) -> list[str]:
    return [str(v) for v in as_list(rule.get(key))]


def verb_matches(rule: Obj, verb: str) -> bool:
    return any(v == "*" or v == verb for v in _strings(rule, "verbs"))


def api_group_matches(rule: Obj, group: str) -> bool:
    return any(g == "*" or g == group for g in _strings(rule, "apiGroups"))


def resource_matches(rule: Obj, combined: str, subresource: str) -> bool:
    for resource in _strings(rule, "resources"):
        if resource == "*" or resource == combined:
            return True
        if (
            subresource
            and len(resource) == len(subresource) + 2
            and resource.startswith("*/")
            and resource.endswith(subresource)
        ):
            return True
    return False


def resource_name_matches(rule: Obj, name: str) -> bool:
    names = _strings(rule, "resourceNames")
    return not names or name in names


def non_resource_url_matches(rule: Obj, path: str) -> bool:
    for url in _strings(rule, "nonResourceURLs"):
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Obj) -> bool:
    if attrs.resource_request:
        combined = attrs.resource
        if attrs.subresource:
            combined = f"{attrs.resource}/{attrs.subresource}"
        return (
            verb_matches(rule, attrs.verb)
            and api_group_matches(rule, attrs.api_group)
            and resource_matches(rule, combined, attrs.subresource)
            and resource_name_matches(rule, attrs.name)
        )
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


# --------------------------------------------------------------------------- subjects


def applies_to(user: UserInfo, subject: Obj, namespace: str) -> bool:
    kind, name = subject.get("kind"), str(subject.get("name") or "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_namespace = str(subject.get("namespace") or namespace)
        if not sa_namespace:
            return False
        return user.name == service_account_username(sa_namespace, name)
    return False


def describe_subject(subject: Obj, binding_namespace: str) -> str:
    kind, name = str(subject.get("kind") or ""), str(subject.get("name") or "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


def describe_binding(binding: Obj, subject: Obj) -> str:
    meta = binding["metadata"]
    ref = as_dict(binding.get("roleRef"))
    namespace = str(meta.get("namespace") or "")
    if namespace:
        who = f'RoleBinding "{meta["name"]}/{namespace}"'
    else:
        who = f'ClusterRoleBinding "{meta["name"]}"'
    role = f'{ref.get("kind")} "{ref.get("name")}"'
    return f"{who} of {role} to {describe_subject(subject, namespace)}"


# --------------------------------------------------------------------------- the authorizer


@dataclass
class Decision:
    allowed: bool
    reason: str = ""


class RBACAuthorizer:
    """Decides requests from the Roles and bindings in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _role_rules(self, ref: Obj, namespace: str) -> list[Obj]:
        """The rules of a binding's roleRef; LookupError (with the lister's NotFound
        text) when the role is missing."""
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        if kind == "ClusterRole":
            role = self.store.get(CLUSTER_ROLES, "", name)
            if role is None:
                raise LookupError(f'clusterrole.{GROUP} "{name}" not found')
        elif kind == "Role" and namespace:
            role = self.store.get(ROLES, namespace, name)
            if role is None:
                raise LookupError(f'role.{GROUP} "{name}" not found')
        else:
            raise LookupError(f"unsupported role reference kind: {kind!r}")
        return [as_dict(r) for r in as_list(role.get("rules"))]

    def visit(self, user: UserInfo, namespace: str) -> Iterator[tuple[str, Obj | None, str]]:
        """(describer, rule, error) for each rule that applies to `user` in `namespace`:
        cluster-wide bindings first, then the namespace's; errors have rule None."""
        sources = [(b, "") for b in self.store.items(CLUSTER_ROLE_BINDINGS)]
        if namespace:
            sources += [(b, namespace) for b in self.store.items(ROLE_BINDINGS, namespace)]
        for binding, binding_ns in sources:
            subject = next(
                (
                    s
                    for s in (as_dict(x) for x in as_list(binding.get("subjects")))
                    if applies_to(user, s, binding_ns)
                ),
                None,
            )
            if subject is None:
                continue
            try:
                rules = self._role_rules(as_dict(binding.get("roleRef")), binding_ns)
            except LookupError as exc:
                yield "", None, str(exc)
                continue
            describer = describe_binding(binding, subject)
            for rule in rules:
                yield describer, rule, ""

    def authorize(self, attrs: Attributes) -> Decision:
        if SYSTEM_MASTERS in attrs.user.groups:
            return Decision(True)
        errors: list[str] = []
        for describer, rule, error in self.visit(attrs.user, attrs.namespace):
            if rule is None:
                errors.append(error)
            elif rule_allows(attrs, rule):
                return Decision(True, f"RBAC: allowed by {describer}")
        reason = ""
        if errors:
            reason = "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
        return Decision(False, reason)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[Obj], list[Obj], str]:
        """(resourceRules, nonResourceRules, evaluationError) for a SelfSubjectRulesReview."""
        if SYSTEM_MASTERS in user.groups:
            return (
                [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "",
            )
        resource_rules: list[Obj] = []
        non_resource_rules: list[Obj] = []
        errors: list[str] = []
        for _, rule, error in self.visit(user, namespace):
            if rule is None:
                errors.append(error)
                continue
            if as_list(rule.get("resources")):
                entry = {
                    "verbs": _strings(rule, "verbs"),
                    "apiGroups": _strings(rule, "apiGroups"),
                    "resources": _strings(rule, "resources"),
                }
                if as_list(rule.get("resourceNames")):
                    entry["resourceNames"] = _strings(rule, "resourceNames")
                if entry not in resource_rules:
                    resource_rules.append(entry)
            if as_list(rule.get("nonResourceURLs")):
                entry = {
                    "verbs": _strings(rule, "verbs"),
                    "nonResourceURLs": _strings(rule, "nonResourceURLs"),
                }
                if entry not in non_resource_rules:
                    non_resource_rules.append(entry)
        error = ""
        if errors:
            error = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        return resource_rules, non_resource_rules, error


# --------------------------------------------------------------------------- 403


def forbidden_message(attrs: Attributes) -> str:
    """responsewriters.forbiddenMessage."""
    user = attrs.user.name
    if not attrs.resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = attrs.resource
    if attrs.subresource:
        resource = f"{resource}/{attrs.subresource}"
    if attrs.namespace:
        return (
            f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group '
            f'"{attrs.api_group}" in the namespace "{attrs.namespace}"'
        )
    return (
        f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group '
        f'"{attrs.api_group}" at the cluster scope'
    )


def forbidden(attrs: Attributes, reason: str) -> APIError:
    """The 403 of responsewriters.Forbidden: errors.NewForbidden(groupResource, name, msg)."""
    message = forbidden_message(attrs)
    if reason:
        message = f"{message}: {reason}"
    group, resource = attrs.api_group, attrs.resource
    qualified = f"{resource}.{group}" if group else resource
    details: dict[str, str] = {}  # metav1.StatusDetails: name, group, kind (omitempty)
    if attrs.name:
        details["name"] = attrs.name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    if not qualified:
        text = f"forbidden: {message}"
    elif not attrs.name:
        text = f"{qualified} is forbidden: {message}"
    else:
        text = f'{qualified} "{attrs.name}" is forbidden: {message}'
    return APIError(403, "Forbidden", text, details)
