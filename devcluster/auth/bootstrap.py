"""The RBAC objects kube-apiserver creates at start-up that clients rely on.

Taken from Kubernetes' bootstrap policy
(plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go and its testdata
cluster-roles.yaml / cluster-role-bindings.yaml), for the API groups devcluster serves:
`cluster-admin` (bound to `system:masters`), the aggregated user-facing roles `admin`,
`edit` and `view` with the `system:aggregate-to-*` roles that fill them, and the roles
every authenticated client needs: `system:discovery` and `system:basic-user` (bound to
`system:authenticated`), `system:public-info-viewer` (bound to `system:authenticated`
and `system:unauthenticated`) and `system:monitoring`. Each carries the label
`kubernetes.io/bootstrapping: rbac-defaults` and the annotation
`rbac.authorization.kubernetes.io/autoupdate: "true"`; like kube-apiserver, devcluster
recreates a missing one at start-up and leaves existing ones alone.
"""

from __future__ import annotations

from devcluster.store import Obj

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
READ_WRITE = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> Obj:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _urls(verbs: list[str], urls: list[str]) -> Obj:
    return {"nonResourceURLs": urls, "verbs": verbs}


def _cluster_role(
    name: str,
    rules: list[Obj] | None,
    *,
    labels: dict[str, str] | None = None,
    aggregate: str | None = None,
) -> Obj:
    role: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {**BOOTSTRAP_LABELS, **(labels or {})},
            "annotations": dict(AUTOUPDATE),
        },
    }
    if aggregate is not None:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate: "true"}}]
        }
        role["rules"] = []
    else:
        role["rules"] = rules or []
    return role


def _binding(name: str, role: str, groups: list[str]) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": dict(BOOTSTRAP_LABELS),
            "annotations": dict(AUTOUPDATE),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups
        ],
    }


def cluster_roles() -> list[Obj]:
    return [
        _cluster_role(
            "cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]
        ),
        _cluster_role("admin", None, aggregate="admin"),
        _cluster_role("edit", None, aggregate="edit", labels={AGGREGATE_TO + "admin": "true"}),
        _cluster_role("view", None, aggregate="view", labels={AGGREGATE_TO + "edit": "true"}),
        _cluster_role(
            "system:aggregate-to-admin",
            [
                _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
                _rule(READ_WRITE, ["rbac.authorization.k8s.io"], ["rolebindings", "roles"]),
            ],
            labels={AGGREGATE_TO + "admin": "true"},
        ),
        _cluster_role(
            "system:aggregate-to-edit",
            [
                _rule(
                    READ,
                    [""],
                    ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
                     "services/proxy"],
                ),
                _rule(["impersonate"], [""], ["serviceaccounts"]),
                _rule(
                    WRITE,
                    [""],
                    ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
                ),
                _rule(["create"], [""], ["pods/eviction"]),
                _rule(
                    WRITE,
                    [""],
                    ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                     "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                     "services/proxy"],
                ),
                _rule(["create"], [""], ["serviceaccounts/token"]),
                _rule(
                    WRITE,
                    ["apps"],
                    ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                     "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"],
                ),
                _rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
                _rule(WRITE, ["batch"], ["cronjobs", "jobs"]),
                _rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
                _rule(WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
                _rule(READ_WRITE, ["coordination.k8s.io"], ["leases"]),
            ],
            labels={AGGREGATE_TO + "edit": "true"},
        ),
        _cluster_role(
            "system:aggregate-to-view",
            [
                _rule(
                    READ,
                    [""],
                    ["configmaps", "endpoints", "persistentvolumeclaims",
                     "persistentvolumeclaims/status", "pods", "replicationcontrollers",
                     "replicationcontrollers/scale", "serviceaccounts", "services",
                     "services/status"],
                ),
                _rule(
                    READ,
                    [""],
                    ["bindings", "events", "limitranges", "namespaces/status", "pods/log",
                     "pods/status", "replicationcontrollers/status", "resourcequotas",
                     "resourcequotas/status"],
                ),
                _rule(READ, [""], ["namespaces"]),
                _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
                _rule(
                    READ,
                    ["apps"],
                    ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                     "deployments/scale", "deployments/status", "replicasets",
                     "replicasets/scale", "replicasets/status", "statefulsets",
                     "statefulsets/scale", "statefulsets/status"],
                ),
                _rule(
                    READ,
                    ["autoscaling"],
                    ["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
                ),
                _rule(READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
                _rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
                _rule(
                    READ,
                    ["networking.k8s.io"],
                    ["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
            labels={AGGREGATE_TO + "view": "true"},
        ),
        _cluster_role(
            "system:basic-user",
            [
                _rule(
                    ["create"],
                    ["authorization.k8s.io"],
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
            ],
        ),
        _cluster_role(
            "system:discovery",
            [
                _urls(
                    ["get"],
                    ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                     "/openapi/*", "/readyz", "/version", "/version/"],
                )
            ],
        ),
        _cluster_role(
            "system:public-info-viewer",
            [_urls(["get"], ["/healthz", "/livez", "/readyz", "/version", "/version/"])],
        ),
        _cluster_role(
            "system:monitoring",
            [
                _urls(
                    ["get"],
                    ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics",
                     "/metrics/slis", "/readyz", "/readyz/*"],
                )
            ],
        ),
    ]  # fmt: skip


def cluster_role_bindings() -> list[Obj]:
    return [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding("system:monitoring", "system:monitoring", ["system:monitoring"]),
        _binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            ["system:authenticated", "system:unauthenticated"],
        ),
    ]
