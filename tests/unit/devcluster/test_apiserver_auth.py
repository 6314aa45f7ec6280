"""Authentication, RBAC, TokenRequest, access reviews, ServiceAccount admission and the
audit log of the devcluster API server, through HTTP in process."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.apiserver.app import SECURITY_KEY
from tests.unit.devcluster.test_apiserver_support import Api, Reply, api_client, pod
from tests.waiting import wait_for_async

JSON = dict[str, Any]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
NS = "/api/v1/namespaces/default"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSRR = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
SA_USER = "system:serviceaccount:default:robot"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for client in api_client(tmp_path, audit_log=tmp_path / "audit.log"):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin(api: Api) -> dict[str, str]:
    return bearer(api.app[SECURITY_KEY].admin_token)


async def service_account(api: Api, name: str = "robot", **spec: Any) -> str:
    """Create service account `name` in default and return a token for it."""
    created = await api.post(f"{NS}/serviceaccounts", {"metadata": {"name": name}})
    assert created.status == 201, created
    reply = await api.post(f"{NS}/serviceaccounts/{name}/token", {"spec": spec})
    assert reply.status == 201, reply
    assert reply["kind"] == "TokenRequest"
    return str(reply["status"]["token"])


async def whoami(api: Api, token: str) -> Reply:
    return await api.post(WHOAMI, {}, headers=bearer(token))


async def bind(
    api: Api, kind: str, name: str, role_kind: str, role: str, subjects: list[JSON]
) -> None:
    path = (
        f"{RBAC}/namespaces/default/rolebindings"
        if kind == "RoleBinding"
        else (f"{RBAC}/clusterrolebindings")
    )
    body = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    }
    reply = await api.post(path, body)
    assert reply.status == 201, reply


ROBOT = [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]


# --------------------------------------------------------------------------- authentication


async def test_credentials_decide_the_user(api: Api) -> None:
    unsecured = await api.post(WHOAMI, {})
    assert unsecured["status"]["userInfo"]["username"] == "system:unsecured"
    as_admin = await api.post(WHOAMI, {}, headers=admin(api))
    assert as_admin["status"]["userInfo"] == {
        "username": "kubernetes-admin",
        "groups": ["system:masters", "system:authenticated"],
    }
    token = await service_account(api)
    user = (await whoami(api, token))["status"]["userInfo"]
    assert user["username"] == SA_USER
    assert user["groups"] == [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ]
    sa = await api.get(f"{NS}/serviceaccounts/robot")
    assert user["uid"] == sa["metadata"]["uid"]


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic dXNlcjpwYXNz", "token"])
async def test_invalid_credentials_get_kube_apiservers_401(api: Api, header: str) -> None:
    reply = await api.get(f"{NS}/pods", headers={"Authorization": header})
    assert reply.status == 401
    assert reply.body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


async def test_tokens_die_with_what_they_are_bound_to(api: Api) -> None:
    token = await service_account(api)
    created = await api.post(f"{NS}/pods", pod("holder"))
    holder = created["metadata"]
    bound = await api.post(
        f"{NS}/serviceaccounts/robot/token",
        {
            "spec": {
                "expirationSeconds": 600,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": "holder",
                    "uid": holder["uid"],
                },
            }
        },
    )
    assert bound.status == 201, bound
    pod_token = bound["status"]["token"]
    extra = (await whoami(api, pod_token))["status"]["userInfo"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["holder"]
    await api.delete(f"{NS}/pods/holder", params={"gracePeriodSeconds": "0"})
    assert (await whoami(api, pod_token)).status == 401
    assert (await whoami(api, token)).status == 201
    # a recreated account is another account: the old tokens stop working
    await api.delete(f"{NS}/serviceaccounts/robot")
    await api.post(f"{NS}/serviceaccounts", {"metadata": {"name": "robot"}})
    assert (await whoami(api, token)).status == 401


async def test_token_request_validation(api: Api) -> None:
    await service_account(api)
    short = await api.post(f"{NS}/serviceaccounts/robot/token", {"spec": {"expirationSeconds": 60}})
    assert short.status == 422
    assert short["message"] == (
        'TokenRequest.authentication.k8s.io "robot" is invalid: spec.expirationSeconds: '
        "Invalid value: 60: may not specify a duration less than 10 minutes"
    )
    missing = await api.post(f"{NS}/serviceaccounts/nobody/token", {"spec": {}})
    assert (missing.status, missing["message"]) == (404, 'serviceaccounts "nobody" not found')
    other_audience = await api.post(
        f"{NS}/serviceaccounts/robot/token", {"spec": {"audiences": ["vault"]}}
    )
    assert (await whoami(api, other_audience["status"]["token"])).status == 401
    unbound = await api.post(
        f"{NS}/serviceaccounts/robot/token",
        {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "ghost"}}},
    )
    assert (unbound.status, unbound["message"]) == (404, 'pods "ghost" not found')


async def test_service_account_token_secrets_are_filled_and_revocable(api: Api) -> None:
    await service_account(api)
    secret = {
        "metadata": {
            "name": "robot-token",
            "annotations": {"kubernetes.io/service-account.name": "robot"},
        },
        "type": "kubernetes.io/service-account-token",
    }
    assert (await api.post(f"{NS}/secrets", secret)).status == 201

    async def filled() -> JSON | None:
        reply = await api.get(f"{NS}/secrets/robot-token")
        return reply.body if (reply.body.get("data") or {}).get("token") else None

    stored = await wait_for_async(filled, 5, "the token controller to fill the secret")
    assert base64.b64decode(stored["data"]["namespace"]) == b"default"
    sa = await api.get(f"{NS}/serviceaccounts/robot")
    annotations = stored["metadata"]["annotations"]
    assert annotations["kubernetes.io/service-account.uid"] == sa["metadata"]["uid"]
    token = base64.b64decode(stored["data"]["token"]).decode()
    assert (await whoami(api, token))["status"]["userInfo"]["username"] == SA_USER
    await api.delete(f"{NS}/secrets/robot-token")
    assert (await whoami(api, token)).status == 401


async def test_anonymous_mode(tmp_path: Path) -> None:
    async for api in api_client(tmp_path, anonymous="anonymous"):
        assert (await api.get("/version")).status == 200
        assert (await api.get("/healthz")).status == 200
        assert (await api.get("/api")).status == 403  # system:discovery is for authenticated
        pods = await api.get(f"{NS}/pods")
        assert pods.status == 403
        assert pods["message"] == (
            'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API '
            'group "" in the namespace "default"'
        )
        assert (await api.get(f"{NS}/pods", headers=admin(api))).status == 200


# --------------------------------------------------------------------------- RBAC


async def test_a_role_allows_exactly_its_rules(api: Api) -> None:
    token = await service_account(api)
    sa = bearer(token)
    role = {
        "metadata": {"name": "config-reader"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
             "resourceNames": ["settings"]},
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
        ],
    }  # fmt: skip
    assert (await api.post(f"{RBAC}/namespaces/default/roles", role)).status == 201
    await bind(api, "RoleBinding", "robot-config", "Role", "config-reader", ROBOT)
    for name in ("settings", "other"):
        await api.post(f"{NS}/configmaps", {"metadata": {"name": name}, "data": {"a": "1"}})

    assert (await api.get(f"{NS}/configmaps/settings", headers=sa)).status == 200
    other = await api.get(f"{NS}/configmaps/other", headers=sa)
    assert other.status == 403
    assert other.body["details"] == {"name": "other", "kind": "configmaps"}
    assert (await api.get(f"{NS}/configmaps", headers=sa)).status == 403  # list: no name
    listed = await api.get(
        f"{NS}/configmaps", headers=sa, params={"fieldSelector": "metadata.name=settings"}
    )
    assert listed.status == 403  # resourceNames allow list by name only with the list verb
    assert (await api.get(f"{NS}/pods", headers=sa)).status == 200
    watch = await api.get(f"{NS}/pods", headers=sa, params={"watch": "1", "timeoutSeconds": "1"})
    assert watch.status == 403
    assert 'cannot watch resource "pods"' in watch["message"]
    assert (await api.post(f"{NS}/pods", pod("p"), headers=sa)).status == 403
    assert (await api.delete(f"{NS}/pods", headers=sa)).status == 403
    # other namespaces are out of a RoleBinding's reach
    elsewhere = await api.get("/api/v1/namespaces/kube-system/pods", headers=sa)
    assert elsewhere["message"].endswith('in the namespace "kube-system"')
    assert (await api.get("/api/v1/pods", headers=sa))["message"].endswith("at the cluster scope")
    # subresources
    await api.post(f"{NS}/pods", pod("p"))
    assert (await api.get(f"{NS}/pods/p/status", headers=sa)).status == 403
    scale = await api.patch(
        "/apis/apps/v1/namespaces/default/deployments/none/scale",
        {"spec": {"replicas": 1}},
        headers=sa,
    )
    assert scale.status == 404  # authorized; the deployment does not exist
    get_scale = await api.get("/apis/apps/v1/namespaces/default/deployments/none/scale", headers=sa)
    assert get_scale["message"] == (
        'deployments.apps "none" is forbidden: User "system:serviceaccount:default:robot" '
        'cannot get resource "deployments/scale" in API group "apps" in the namespace "default"'
    )


async def test_discovery_and_public_paths_follow_the_bootstrap_roles(api: Api) -> None:
    sa = bearer(await service_account(api))
    for path in ("/version", "/healthz", "/api", "/api/v1", "/apis", "/apis/apps/v1",
                 "/openapi/v2"):  # fmt: skip
        assert (await api.get(path, headers=sa)).status == 200, path
    metrics = await api.get("/metrics", headers=sa)
    assert (metrics.status, metrics.body["message"]) == (
        403,
        'forbidden: User "system:serviceaccount:default:robot" cannot get path "/metrics"',
    )
    names = {r["metadata"]["name"] for r in (await api.get(f"{RBAC}/clusterroles"))["items"]}
    assert {"cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
            "system:public-info-viewer"} <= names  # fmt: skip


async def test_missing_roles_are_named_in_the_denial(api: Api) -> None:
    sa = bearer(await service_account(api))
    await bind(api, "RoleBinding", "dangling", "Role", "gone", ROBOT)
    reply = await api.get(f"{NS}/pods", headers=sa)
    assert reply["message"].endswith(
        'in the namespace "default": RBAC: role.rbac.authorization.k8s.io "gone" not found'
    )


async def test_cluster_role_bindings_and_groups(api: Api) -> None:
    sa = bearer(await service_account(api))
    await bind(
        api,
        "ClusterRoleBinding",
        "all-sa-view",
        "ClusterRole",
        "view",
        [{"kind": "Group", "name": "system:serviceaccounts:default"}],
    )
    assert (await api.get("/api/v1/namespaces/kube-system/pods", headers=sa)).status == 200
    assert (await api.get(f"{NS}/secrets", headers=sa)).status == 403  # view omits secrets


async def test_aggregation_fills_the_default_roles(api: Api) -> None:
    sa = bearer(await service_account(api))
    await bind(api, "RoleBinding", "robot-edit", "ClusterRole", "edit", ROBOT)
    leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    assert (await api.get(leases, headers=sa)).status == 200
    jobs = "/apis/elasticlm.io/v1alpha1/namespaces/default/lmtrainingjobs"
    await api.install_crds()
    assert (await api.get(jobs, headers=sa)).status == 403
    extra: JSON = {
        "metadata": {
            "name": "lmtrainingjobs-view",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"},
        },
        "rules": [{"apiGroups": ["elasticlm.io"], "resources": ["lmtrainingjobs"],
                   "verbs": ["get", "list", "watch"]}],
    }  # fmt: skip
    assert (await api.post(f"{RBAC}/clusterroles", extra)).status == 201

    async def allowed() -> bool:  # view -> edit -> admin
        return (await api.get(jobs, headers=sa)).status == 200

    await wait_for_async(allowed, 5, "the aggregated rule to reach edit")
    admin_role = await api.get(f"{RBAC}/clusterroles/admin")
    assert extra["rules"][0] in admin_role["rules"]
    await api.delete(f"{RBAC}/clusterroles/lmtrainingjobs-view")

    async def revoked() -> bool:
        return (await api.get(jobs, headers=sa)).status == 403

    await wait_for_async(revoked, 5, "the rule to leave edit")


async def test_access_reviews_answer_from_rbac(api: Api) -> None:
    sa = bearer(await service_account(api))
    await bind(api, "RoleBinding", "robot-view", "ClusterRole", "view", ROBOT)

    async def can(verb: str, resource: str, namespace: str = "default", **more: str) -> JSON:
        attributes = {"verb": verb, "resource": resource, "namespace": namespace, **more}
        reply = await api.post(SSAR, {"spec": {"resourceAttributes": attributes}}, headers=sa)
        assert reply.status == 201, reply
        return dict(reply["status"])

    assert await can("list", "pods") == {
        "allowed": True,
        "reason": 'RBAC: allowed by RoleBinding "robot-view/default" of ClusterRole "view" to '
        'ServiceAccount "robot/default"',
    }
    assert await can("delete", "pods") == {"allowed": False}
    assert (await can("get", "deployments", group="apps", subresource="scale"))["allowed"]
    non_resource = await api.post(
        SSAR, {"spec": {"nonResourceAttributes": {"path": "/version", "verb": "get"}}}, headers=sa
    )
    assert non_resource["status"]["allowed"]
    invalid = await api.post(SSAR, {"spec": {}}, headers=sa)
    assert invalid.status == 422
    rules = await api.post(SSRR, {"spec": {"namespace": "default"}}, headers=sa)
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]} in (
        rules["status"]["resourceRules"]
    )
    assert rules["status"]["incomplete"] is False
    assert {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                                   "/version/"]} in rules["status"][
        "nonResourceRules"
    ]  # fmt: skip


async def test_rbac_objects_are_validated(api: Api) -> None:
    bad_role = {
        "metadata": {"name": "bad"},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}, {"verbs": ["get"]}],
    }
    reply = await api.post(f"{RBAC}/namespaces/default/roles", bad_role)
    assert reply.status == 422
    assert [c["field"] for c in reply["details"]["causes"]] == [
        "rules[0].nonResourceURLs",
        "rules[1].apiGroups",
        "rules[1].resources",
    ]
    await bind(api, "RoleBinding", "b", "ClusterRole", "view", ROBOT)
    changed = await api.patch(
        f"{RBAC}/namespaces/default/rolebindings/b", {"roleRef": {"name": "edit"}}
    )
    assert changed.status == 422
    assert "roleRef: Invalid value" in changed["message"]
    assert changed["message"].endswith("cannot change roleRef")
    bad_kind = await api.post(
        f"{RBAC}/clusterrolebindings",
        {
            "metadata": {"name": "x"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        },
    )
    assert bad_kind.status == 422
    assert 'roleRef.kind: Unsupported value: "Role"' in bad_kind["message"]


# --------------------------------------------------------------------------- pods


async def test_service_account_admission(api: Api) -> None:
    missing = await api.post(f"{NS}/pods", pod("p", serviceAccountName="nobody"))
    assert (missing.status, missing["message"]) == (
        403,
        'pods "p" is forbidden: error looking up service account default/nobody: '
        'serviceaccount "nobody" not found',
    )
    created = await api.post(f"{NS}/pods", pod("q"))
    volumes = created["spec"]["volumes"]
    assert len(volumes) == 1
    assert volumes[0]["name"].startswith("kube-api-access-")
    sources = volumes[0]["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[-1]["downwardAPI"]["items"][0]["path"] == "namespace"
    assert created["spec"]["containers"][0]["volumeMounts"] == [
        {
            "name": volumes[0]["name"],
            "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        }
    ]
    opted_out = await api.post(f"{NS}/pods", pod("r", automountServiceAccountToken=False))
    assert "volumes" not in opted_out["spec"]


# --------------------------------------------------------------------------- audit


async def test_audit_log_records_every_request(api: Api, tmp_path: Path) -> None:
    sa = bearer(await service_account(api))
    await api.get(f"{NS}/pods", headers=sa)
    await api.get(f"{NS}/configmaps", headers={"Authorization": "Bearer wrong"})
    await api.get("/version", headers=sa)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    denied = next(e for e in events if e["requestURI"] == f"{NS}/pods")
    assert denied["user"]["username"] == SA_USER
    assert denied["user"]["groups"][-1] == "system:authenticated"
    assert denied["verb"] == "list"
    assert denied["objectRef"] == {"resource": "pods", "namespace": "default", "apiVersion": "v1"}
    assert denied["responseStatus"]["code"] == 403
    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert denied["stage"] == "ResponseComplete"
    assert denied["level"] == "Metadata"
    unauthorized = next(e for e in events if e["requestURI"] == f"{NS}/configmaps")
    assert unauthorized["user"] == {}
    assert unauthorized["responseStatus"]["code"] == 401
    token_request = next(e for e in events if e["requestURI"].endswith("/token"))
    assert token_request["objectRef"]["subresource"] == "token"
    assert token_request["verb"] == "create"
    assert "token" not in json.dumps(token_request["responseStatus"])  # no bodies
    version = next(e for e in events if e["requestURI"] == "/version")
    assert "objectRef" not in version
    assert version["responseStatus"]["code"] == 200
    assert all(e["requestReceivedTimestamp"].endswith("Z") for e in events)


async def test_no_audit_log_by_default(tmp_path: Path) -> None:
    async for api in api_client(tmp_path):
        await api.get("/version")
        assert api.app[SECURITY_KEY].audit_log is None
    assert not list(tmp_path.glob("*.log"))


# --------------------------------------------------------------------------- impersonation


async def test_impersonation_needs_the_impersonate_verb(api: Api) -> None:
    token = await service_account(api)
    await bind(api, "RoleBinding", "robot-view", "ClusterRole", "view", ROBOT)
    as_robot = {"Impersonate-User": SA_USER}
    who = await api.post(WHOAMI, {}, headers={**admin(api), **as_robot})
    assert who["status"]["userInfo"] == {
        "username": SA_USER,
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated",
        ],
    }
    assert (await api.get(f"{NS}/pods", headers={**admin(api), **as_robot})).status == 200
    assert (await api.get(f"{NS}/secrets", headers={**admin(api), **as_robot})).status == 403
    as_bob = {"Impersonate-User": "bob", "Impersonate-Group": "devs"}
    bob = await api.post(WHOAMI, {}, headers={**admin(api), **as_bob})
    assert bob["status"]["userInfo"]["groups"] == ["devs", "system:authenticated"]
    denied = await api.get(f"{NS}/pods", headers={**bearer(token), **as_bob})
    assert (denied.status, denied["message"]) == (
        403,
        f'users "bob" is forbidden: User "{SA_USER}" cannot impersonate resource "users" in '
        'API group "" at the cluster scope',
    )
    groups_only = await api.get(f"{NS}/pods", headers={"Impersonate-Group": "devs"})
    assert groups_only.status == 400


async def test_bindings_print_as_kube_apiserver_prints_them(api: Api) -> None:
    await bind(
        api, "RoleBinding", "rb", "ClusterRole", "view", [*ROBOT, {"kind": "User", "name": "alice"}]
    )
    table = await api.get(
        f"{RBAC}/namespaces/default/rolebindings",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    cells = table["rows"][0]["cells"]
    assert cells[:2] == ["rb", "ClusterRole/view"]
    assert cells[3:] == ["alice", "", "default/robot"]
