"""Service-account tokens and RBAC as kube-apiserver enforces them: who a token is, what
a Role, a ClusterRole (aggregated or not) and their bindings allow, the 401 and 403
answers word for word, `kubectl auth can-i`, and a pod that uses its token.

Everything runs through the official client's connection (TLS, CA) with the service
account's token in place of the admin's, so the same tests run against a real cluster
(ELASTICLM_E2E=1).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import urllib3

from tests.integration.conformance.helpers import (
    CONTROLLER_TIMEOUT,
    RawResponse,
    python_pod,
    url_of,
    wait_default_service_account,
    wait_pod_phase,
)
from tests.integration.harness import Cluster
from tests.kubeclient import CoreApi
from tests.waiting import wait_for

Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"


def as_token(
    api: kubernetes.client.ApiClient,
    token: str,
    method: str,
    path: str,
    body: Obj | None = None,
    query: dict[str, Any] | None = None,
) -> RawResponse:
    """One request with the admin client's connection but `token` as credentials."""
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    response = api.rest_client.pool_manager.request(
        method,
        url_of(api, path, query),
        body=data,
        headers=headers,
        timeout=urllib3.Timeout(total=30),
        preload_content=True,
        retries=False,
    )
    return RawResponse(response.status, dict(response.headers), response.data)


def rbac_api(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.RbacAuthorizationV1Api(api)


@pytest.fixture
def robot(api: kubernetes.client.ApiClient, core: CoreApi, namespace: str) -> str:
    """A service account `robot` in the test's namespace; returns a token for it."""
    wait_default_service_account(core, namespace)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    request = core.create_namespaced_service_account_token(
        "robot", namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return str(request.status.token)


def role(name: str, rules: list[Obj]) -> Obj:
    return {"metadata": {"name": name}, "rules": rules}


def binding(name: str, kind: str, role_name: str, namespace: str) -> Obj:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": namespace}],
    }


def test_an_invalid_token_gets_401(api: kubernetes.client.ApiClient, namespace: str) -> None:
    reply = as_token(api, "not-a-token", "GET", f"/api/v1/namespaces/{namespace}/pods")
    assert reply.status == 401
    assert reply.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def test_a_token_is_its_service_account(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str, robot: str
) -> None:
    reply = as_token(
        api,
        robot,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert reply.status == 201, reply
    user = reply.json()["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:robot"
    assert user["groups"] == [
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    ]
    assert user["uid"] == core.read_namespaced_service_account("robot", namespace).metadata.uid


def test_a_role_allows_exactly_its_rules(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str, robot: str
) -> None:
    rbac = rbac_api(api)
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
         "resourceNames": ["settings"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
    ]  # fmt: skip
    rbac.create_namespaced_role(namespace, role("robot", rules))
    rbac.create_namespaced_role_binding(namespace, binding("robot", "Role", "robot", namespace))
    for name in ("settings", "other"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    ns_path = f"/api/v1/namespaces/{namespace}"
    user = f"system:serviceaccount:{namespace}:robot"

    def status(method: str, path: str, body: Obj | None = None) -> int:
        return as_token(api, robot, method, path, body).status

    # RBAC caches settle within moments on a real cluster
    wait_for(lambda: status("GET", f"{ns_path}/pods") == 200, CONTROLLER_TIMEOUT, "the Role")
    assert status("GET", f"{ns_path}/configmaps/settings") == 200
    other = as_token(api, robot, "GET", f"{ns_path}/configmaps/other")
    assert other.status == 403
    assert other.json()["message"] == (
        f'configmaps "other" is forbidden: User "{user}" cannot get resource "configmaps" in '
        f'API group "" in the namespace "{namespace}"'
    )
    assert other.json()["reason"] == "Forbidden"
    assert other.json()["details"] == {"name": "other", "kind": "configmaps"}
    listing = as_token(api, robot, "GET", f"{ns_path}/configmaps")
    assert listing.json()["message"] == (
        f'configmaps is forbidden: User "{user}" cannot list resource "configmaps" in API '
        f'group "" in the namespace "{namespace}"'
    )
    assert status("DELETE", f"{ns_path}/configmaps/settings") == 403
    assert status("POST", f"{ns_path}/configmaps", {"metadata": {"name": "new"}}) == 403
    watch = as_token(api, robot, "GET", f"{ns_path}/pods", query={"watch": "true"})
    assert watch.status == 403
    assert 'cannot watch resource "pods"' in watch.json()["message"]
    assert status("GET", f"{ns_path}/secrets") == 403
    nodes = as_token(api, robot, "GET", "/api/v1/nodes")
    assert nodes.json()["message"] == (
        f'nodes is forbidden: User "{user}" cannot list resource "nodes" in API group "" at '
        "the cluster scope"
    )
    scale = as_token(api, robot, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/x/scale")
    assert scale.status == 404  # allowed by the rule; there is no such deployment
    deployment = as_token(api, robot, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/x")
    assert deployment.json()["message"] == (
        f'deployments.apps "x" is forbidden: User "{user}" cannot get resource "deployments" '
        f'in API group "apps" in the namespace "{namespace}"'
    )
    assert deployment.json()["details"] == {"name": "x", "group": "apps", "kind": "deployments"}


def test_non_resource_urls_follow_the_bootstrap_roles(
    api: kubernetes.client.ApiClient, robot: str, namespace: str
) -> None:
    for path in ("/version", "/healthz", "/api", "/apis", "/api/v1", "/apis/apps/v1"):
        assert as_token(api, robot, "GET", path).status == 200, path
    metrics = as_token(api, robot, "GET", "/metrics")
    assert metrics.status == 403
    assert metrics.json()["message"] == (
        f'forbidden: User "system:serviceaccount:{namespace}:robot" cannot get path "/metrics"'
    )


@pytest.fixture
def view_extension(api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A ClusterRole aggregated into `view` (a cluster-scoped object: deleted after)."""
    name = f"t-{uuid.uuid4().hex[:8]}-view-leases"
    rbac_api(api).create_cluster_role(
        {
            "metadata": {
                "name": name,
                "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"},
            },
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "list"],
                }
            ],
        }
    )
    yield name
    rbac_api(api).delete_cluster_role(name)


def test_aggregated_cluster_roles(
    api: kubernetes.client.ApiClient, namespace: str, robot: str, view_extension: str
) -> None:
    rbac = rbac_api(api)
    rbac.create_namespaced_role_binding(
        namespace, binding("view", "ClusterRole", "view", namespace)
    )
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    wait_for(
        lambda: as_token(api, robot, "GET", leases).status == 200,
        CONTROLLER_TIMEOUT,
        "view to aggregate the leases rule",
    )
    view = rbac.read_cluster_role("view")
    assert view.aggregation_rule.cluster_role_selectors[0].match_labels == {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"
    }
    admin = rbac.read_cluster_role("admin")  # view -> edit -> admin
    assert any("leases" in (r.resources or []) and "list" in r.verbs for r in admin.rules)
    assert as_token(api, robot, "GET", f"/api/v1/namespaces/{namespace}/secrets").status == 403


def test_a_binding_to_a_missing_role_is_named_in_the_denial(
    api: kubernetes.client.ApiClient, namespace: str, robot: str
) -> None:
    rbac_api(api).create_namespaced_role_binding(
        namespace, binding("dangling", "Role", "gone", namespace)
    )
    path = f"/api/v1/namespaces/{namespace}/pods"

    def reason() -> str | None:
        message = str(as_token(api, robot, "GET", path).json()["message"])
        return message if "RBAC:" in message else None

    message = wait_for(reason, CONTROLLER_TIMEOUT, "the binding to be seen")
    assert message.endswith(
        f'in the namespace "{namespace}": RBAC: role.rbac.authorization.k8s.io "gone" not found'
    )


def test_kubectl_auth_can_i(cluster: Cluster, api: kubernetes.client.ApiClient,
                            namespace: str, robot: str) -> None:  # fmt: skip
    rbac = rbac_api(api)
    rbac.create_namespaced_role(
        namespace,
        role("pods", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]),
    )
    rbac.create_namespaced_role_binding(namespace, binding("pods", "Role", "pods", namespace))
    who = f"--as=system:serviceaccount:{namespace}:robot"

    def can(*args: str) -> str:
        return cluster.kubectl("auth", "can-i", *args, "-n", namespace, check=False).stdout.strip()

    wait_for(lambda: can("list", "pods", who) == "yes", CONTROLLER_TIMEOUT, "can-i list pods")
    assert can("delete", "pods", who) == "no"
    assert can("get", "secrets", who) == "no"
    assert can("list", "pods", f"--token={robot}") == "yes"
    assert can("create", "pods", f"--token={robot}") == "no"
    listed = cluster.kubectl("auth", "can-i", "--list", "-n", namespace, f"--token={robot}")
    pods_line = next(line for line in listed.stdout.splitlines() if line.startswith("pods "))
    assert pods_line.rstrip().endswith("[list watch]")
    whoami = cluster.kubectl("auth", "whoami", f"--token={robot}", "-o", "json")
    username = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{namespace}:robot"


#: What the pod does with its token: the in-cluster configuration by hand (standard
#: library only, so that the pod runs on a real cluster's python image), one request per
#: line of REQUESTS, the status of each printed as JSON.
IN_CLUSTER_CHECK = """
import json, os, ssl, urllib.error, urllib.request
sa = os.environ["SA_DIR"]
token = open(os.path.join(sa, "token")).read()
namespace = open(os.path.join(sa, "namespace")).read()
context = ssl.create_default_context(cafile=os.path.join(sa, "ca.crt"))
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
base = "https://%s:%s" % (host, port)
answers = {"namespace": namespace}
for line in os.environ["REQUESTS"].splitlines():
    method, path = line.split()
    path = path.replace("NS", namespace)
    body = json.dumps({"metadata": {"name": "made-by-pod"}}).encode() if method == "POST" else None
    request = urllib.request.Request(base + path, data=body, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context) as response:
            answers[line] = response.status
    except urllib.error.HTTPError as error:
        answers[line] = error.code
print(json.dumps(answers))
"""


def test_a_pod_can_do_exactly_what_its_role_allows(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str, robot: str
) -> None:
    rbac = rbac_api(api)
    rbac.create_namespaced_role(
        namespace,
        role(
            "worker",
            [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            ],
        ),
    )
    rbac.create_namespaced_role_binding(namespace, binding("worker", "Role", "worker", namespace))
    requests = [
        "GET /api/v1/namespaces/NS/pods",
        "POST /api/v1/namespaces/NS/configmaps",
        "GET /api/v1/namespaces/NS/configmaps/made-by-pod",
        "GET /api/v1/namespaces/NS/secrets",
        "DELETE /api/v1/namespaces/NS/pods/checker",
        "GET /api/v1/namespaces/default/pods",
        "GET /version",
    ]
    pod = python_pod(
        "checker",
        IN_CLUSTER_CHECK,
        env=[
            {"name": "SA_DIR", "value": "/var/run/secrets/kubernetes.io/serviceaccount"},
            {"name": "REQUESTS", "value": "\n".join(requests)},
        ],
    )
    pod["spec"]["serviceAccountName"] = "robot"
    core.create_namespaced_pod(namespace, pod)
    wait_pod_phase(core, "checker", namespace, "Succeeded", "Failed")
    log = core.read_namespaced_pod_log("checker", namespace, container="main")
    answers = json.loads(log.strip().splitlines()[-1])
    assert answers == {
        "namespace": namespace,
        requests[0]: 200,
        requests[1]: 201,
        requests[2]: 403,
        requests[3]: 403,
        requests[4]: 403,
        requests[5]: 403,
        requests[6]: 200,
    }
    made = core.read_namespaced_config_map("made-by-pod", namespace)
    assert made.metadata.name == "made-by-pod"
    spec = core.read_namespaced_pod("checker", namespace).spec
    mounts = spec.containers[0].volume_mounts
    assert [m.mount_path for m in mounts] == ["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert mounts[0].read_only
