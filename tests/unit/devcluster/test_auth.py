"""devcluster's authentication and RBAC decisions as pure functions: request attributes,
rule matching per rule feature, subjects, the 403 and 401 wording (checked against the
format strings of kube-apiserver's source), tokens, aggregation and audit events."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from devcluster.auth import tokens
from devcluster.auth.audit import audit_event
from devcluster.auth.bootstrap import cluster_roles
from devcluster.auth.controllers import aggregated_rules
from devcluster.auth.rbac import applies_to, forbidden, rule_allows
from devcluster.auth.requestinfo import Attributes, request_attributes
from devcluster.auth.users import UserInfo, service_account_user

SA = service_account_user("team", "robot", "uid-1")

# Format strings copied from Kubernetes' source (v1.33):
# staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
NAMESPACED = "User %q cannot %s resource %q in API group %q in the namespace %q"
CLUSTER = "User %q cannot %s resource %q in API group %q at the cluster scope"
PATH = "User %q cannot %s path %q"
# staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go NewForbidden
FORBIDDEN_NAMED = "%s %q is forbidden: %v"
FORBIDDEN_UNNAMED = "%s is forbidden: %v"
FORBIDDEN_NO_RESOURCE = "forbidden: %v"


def go_sprintf(fmt: str, *args: str) -> str:
    """Go's fmt.Sprintf for %s, %v and %q of plain ASCII strings."""
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        value = next(values)
        return f'"{value}"' if match.group(0) == "%q" else value

    return re.sub(r"%[sqv]", one, fmt)


PODS = "/api/v1/namespaces/ns/pods"
POD = PODS + "/p"
LOG = POD + "/log"


def attrs(method: str, path: str, query: dict[str, str] | None = None) -> Attributes:
    return request_attributes(SA, method, path, query or {})


# --------------------------------------------------------------------------- request info


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", PODS, {}, ("list", "", "pods", "", "ns", "")),
        ("GET", PODS, {"watch": "true"}, ("watch", "", "pods", "", "ns", "")),
        ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "pods", "", "ns", "")),
        ("GET", POD, {}, ("get", "", "pods", "", "ns", "p")),
        ("GET", LOG, {}, ("get", "", "pods", "log", "ns", "p")),
        ("POST", PODS, {}, ("create", "", "pods", "", "ns", "")),
        ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
         ("update", "apps", "deployments", "scale", "ns", "d")),
        ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/status", {},
         ("patch", "apps", "deployments", "status", "ns", "d")),
        ("DELETE", POD, {}, ("delete", "", "pods", "", "ns", "p")),
        ("DELETE", PODS, {}, ("deletecollection", "", "pods", "", "ns", "")),
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
        ("PUT", "/api/v1/namespaces/ns/finalize", {},
         ("update", "", "namespaces", "finalize", "ns", "ns")),
        ("GET", "/api/v1/nodes", {}, ("list", "", "nodes", "", "", "")),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
         {"fieldSelector": "metadata.name=lock"},
         ("list", "coordination.k8s.io", "leases", "", "ns", "lock")),
        ("GET", "/api/v1/namespaces/ns/configmaps",
         {"fieldSelector": "metadata.name==one", "watch": "1"},
         ("watch", "", "configmaps", "", "ns", "one")),
    ],
)  # fmt: skip
def test_resource_requests_get_kubernetes_verbs(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    a = attrs(method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize(
    ("method", "path", "verb"),
    [
        ("GET", "/version", "get"),
        ("GET", "/healthz", "get"),
        ("GET", "/api", "get"),
        ("GET", "/api/v1", "get"),
        ("GET", "/apis", "get"),
        ("GET", "/apis/apps", "get"),
        ("GET", "/apis/apps/v1", "get"),
        ("POST", "/logs", "post"),
    ],
)
def test_paths_outside_resources_are_non_resource_requests(
    method: str, path: str, verb: str
) -> None:
    a = attrs(method, path)
    assert not a.resource_request
    assert (a.verb, a.path) == (verb, path)


# --------------------------------------------------------------------------- rules


POD_READER = {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]}


@pytest.mark.parametrize(
    ("the_rule", "method", "path", "allowed"),
    [
        # verbs
        (POD_READER, "GET", PODS, True),
        (POD_READER, "GET", POD, True),
        (POD_READER, "DELETE", POD, False),
        (POD_READER, "DELETE", PODS, False),
        ({**POD_READER, "verbs": ["deletecollection"]}, "DELETE", PODS, True),
        ({**POD_READER, "verbs": ["*"]}, "PATCH", POD, True),
        ({**POD_READER, "verbs": ["list"]}, "GET", PODS, True),
        ({**POD_READER, "verbs": ["list"]}, "GET", PODS + "?watch=1", False),
        ({**POD_READER, "verbs": ["watch"]}, "GET", PODS + "?watch=1", True),
        # apiGroups
        (POD_READER, "GET", "/apis/apps/v1/namespaces/ns/deployments", False),
        ({**POD_READER, "resources": ["deployments"]}, "GET",
         "/apis/apps/v1/namespaces/ns/deployments", False),
        ({**POD_READER, "apiGroups": ["apps"], "resources": ["deployments"]}, "GET",
         "/apis/apps/v1/namespaces/ns/deployments", True),
        ({**POD_READER, "apiGroups": ["*"], "resources": ["deployments"]}, "GET",
         "/apis/apps/v1/namespaces/ns/deployments", True),
        # subresources
        (POD_READER, "GET", LOG, False),
        ({**POD_READER, "resources": ["pods/log"]}, "GET", LOG, True),
        ({**POD_READER, "resources": ["pods/log"]}, "GET", POD, False),
        ({**POD_READER, "resources": ["pods/*"]}, "GET", LOG, False),
        ({**POD_READER, "resources": ["*/log"]}, "GET", LOG, True),
        ({**POD_READER, "resources": ["*"]}, "GET", LOG, True),
        ({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}, "PUT",
         "/apis/apps/v1/namespaces/ns/deployments/d/status", True),
        ({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}, "PUT",
         "/apis/apps/v1/namespaces/ns/deployments/d/scale", False),
        ({"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}, "PATCH",
         "/apis/apps/v1/namespaces/ns/deployments/d/scale", True),
        # resourceNames
        ({**POD_READER, "resourceNames": ["p"]}, "GET", POD, True),
        ({**POD_READER, "resourceNames": ["p"]}, "GET", "/api/v1/namespaces/ns/pods/q", False),
        ({**POD_READER, "resourceNames": ["p"]}, "GET", PODS, False),
        ({**POD_READER, "resourceNames": ["p"]}, "GET",
         "/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dp", True),
        ({**POD_READER, "verbs": ["create"], "resourceNames": ["p"]}, "POST",
         PODS, False),
        # non-resource URLs
        ({"verbs": ["get"], "nonResourceURLs": ["/version"]}, "GET", "/version", True),
        ({"verbs": ["get"], "nonResourceURLs": ["/version"]}, "GET", "/version/", False),
        ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, "GET", "/apis/apps/v1", True),
        ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, "GET", "/apis", False),
        ({"verbs": ["get"], "nonResourceURLs": ["*"]}, "GET", "/metrics", True),
        ({"verbs": ["get"], "nonResourceURLs": ["/metrics"]}, "POST", "/metrics", False),
        ({"verbs": ["get"], "nonResourceURLs": ["*"]}, "GET", PODS, False),
        (POD_READER, "GET", "/version", False),
    ],
)  # fmt: skip
def test_rule_matching(the_rule: dict[str, Any], method: str, path: str, allowed: bool) -> None:
    path, _, query = path.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    params = {k: v.replace("%3D", "=") for k, v in params.items()}
    assert rule_allows(attrs(method, path, params), the_rule) is allowed


def test_subjects() -> None:
    assert applies_to(SA, {"kind": "ServiceAccount", "name": "robot"}, "team")
    assert applies_to(SA, {"kind": "ServiceAccount", "name": "robot", "namespace": "team"}, "")
    assert not applies_to(SA, {"kind": "ServiceAccount", "name": "robot"}, "")  # no namespace
    assert not applies_to(SA, {"kind": "ServiceAccount", "name": "robot"}, "other")
    assert applies_to(SA, {"kind": "User", "name": "system:serviceaccount:team:robot"}, "")
    assert applies_to(SA, {"kind": "Group", "name": "system:serviceaccounts:team"}, "")
    assert applies_to(SA, {"kind": "Group", "name": "system:authenticated"}, "")
    assert not applies_to(SA, {"kind": "Group", "name": "system:serviceaccounts:other"}, "")
    assert SA.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:team",
        "system:authenticated",
    )


# --------------------------------------------------------------------------- 403 wording


def test_forbidden_wording_follows_kube_apiserver() -> None:
    user = "system:serviceaccount:team:robot"
    listing = forbidden(attrs("GET", "/api/v1/namespaces/team/pods"), "").status()
    assert listing["message"] == go_sprintf(
        FORBIDDEN_UNNAMED, "pods", go_sprintf(NAMESPACED, user, "list", "pods", "", "team")
    )
    assert listing["message"] == (
        'pods is forbidden: User "system:serviceaccount:team:robot" cannot list resource '
        '"pods" in API group "" in the namespace "team"'
    )
    assert (listing["code"], listing["reason"], listing["details"]) == (
        403,
        "Forbidden",
        {"kind": "pods"},
    )

    scale = forbidden(attrs("PUT", "/apis/apps/v1/namespaces/team/deployments/d/scale"), "")
    assert scale.message == go_sprintf(
        FORBIDDEN_NAMED,
        "deployments.apps",
        "d",
        go_sprintf(NAMESPACED, user, "update", "deployments/scale", "apps", "team"),
    )
    assert scale.details == {"name": "d", "group": "apps", "kind": "deployments"}

    nodes = forbidden(attrs("GET", "/api/v1/nodes"), "")
    assert nodes.message == go_sprintf(
        FORBIDDEN_UNNAMED, "nodes", go_sprintf(CLUSTER, user, "list", "nodes", "")
    )

    metrics = forbidden(attrs("GET", "/metrics"), "")
    assert metrics.message == go_sprintf(
        FORBIDDEN_NO_RESOURCE, go_sprintf(PATH, user, "get", "/metrics")
    )
    assert metrics.status()["details"] == {}

    reason = 'RBAC: role.rbac.authorization.k8s.io "gone" not found'
    with_reason = forbidden(attrs("GET", "/api/v1/namespaces/team/pods"), reason)
    assert with_reason.message.endswith('in the namespace "team": ' + reason)


# --------------------------------------------------------------------------- tokens


def test_tokens_are_signed_and_expire() -> None:
    signer = tokens.TokenSigner(b"k" * 32)
    claims = tokens.bound_claims(
        namespace="team",
        service_account=("robot", "uid-1"),
        audiences=[tokens.ISSUER],
        expiration_seconds=600,
        bound=("Pod", "p", "pod-uid"),
        now=1000.0,
    )
    token = signer.sign(claims)
    assert signer.verify(token, now=1001.0) == claims
    assert claims["sub"] == "system:serviceaccount:team:robot"
    assert claims["kubernetes.io"]["pod"] == {"name": "p", "uid": "pod-uid"}
    assert signer.verify(token, now=1600.0) is None  # expired
    head, body, signature = token.split(".")
    assert signer.verify(f"{head}.{body}x.{signature}", now=1001.0) is None  # tampered
    assert tokens.TokenSigner(b"o" * 32).verify(token, now=1001.0) is None  # other key
    assert signer.verify("not-a-jwt") is None


def test_signing_key_is_kept(tmp_path: Any) -> None:
    path = tmp_path / "pki" / "service-account.key"
    first = tokens.TokenSigner.load_or_create(path)
    token = first.sign({"sub": "x", "exp": time.time() + 60})
    assert tokens.TokenSigner.load_or_create(path).verify(token) is not None
    assert path.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- aggregation


def test_aggregation_collects_selected_rules_in_name_order_without_duplicates() -> None:
    roles = {r["metadata"]["name"]: r for r in cluster_roles()}
    crontabs = {"verbs": ["get"], "apiGroups": ["stable.example.com"], "resources": ["crontabs"]}
    extra: dict[str, Any] = {
        "metadata": {
            "name": "aa-crontabs",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"},
        },
        "rules": [
            crontabs,
            roles["system:aggregate-to-view"]["rules"][0],  # a duplicate
        ],
    }
    everything = [*roles.values(), extra]
    view = aggregated_rules(roles["view"], everything)
    assert view[0] == crontabs  # "aa-crontabs" sorts first
    assert view[1:] == roles["system:aggregate-to-view"]["rules"]
    # edit aggregates view's label: the filled view reaches it on the next pass
    filled = [r if r["metadata"]["name"] != "view" else {**r, "rules": view} for r in everything]
    assert crontabs in aggregated_rules(roles["edit"], filled)
    assert aggregated_rules(roles["cluster-admin"], everything) == []


# --------------------------------------------------------------------------- audit


def test_audit_event_has_kubernetes_fields() -> None:
    a = attrs("GET", "/api/v1/namespaces/team/pods/p/log")
    event = audit_event(
        audit_id="id",
        request_uri="/api/v1/namespaces/team/pods/p/log?follow=true",
        attrs=a,
        user=SA,
        source_ip="127.0.0.1",
        user_agent="kubectl/v1.33.0",
        code=403,
        status={"status": "Failure", "reason": "Forbidden", "message": "no"},
        received=datetime(2026, 1, 1, tzinfo=UTC),
        completed=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
        decision="forbid",
    )
    assert event["apiVersion"] == "audit.k8s.io/v1"
    assert event["verb"] == "get"
    assert event["user"] == {
        "username": "system:serviceaccount:team:robot",
        "uid": "uid-1",
        "groups": list(SA.groups),
    }
    assert event["objectRef"] == {
        "resource": "pods",
        "subresource": "log",
        "namespace": "team",
        "name": "p",
        "apiVersion": "v1",
    }
    assert event["responseStatus"] == {
        "metadata": {},
        "code": 403,
        "status": "Failure",
        "message": "no",
        "reason": "Forbidden",
    }
    assert event["requestReceivedTimestamp"] == "2026-01-01T00:00:00.000000Z"
    assert event["annotations"]["authorization.k8s.io/decision"] == "forbid"


def test_user_info_json() -> None:
    assert UserInfo("a").as_json() == {"username": "a"}
