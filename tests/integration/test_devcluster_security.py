"""devcluster's own security options, as `elasticlm local up` users meet them: the HTTPS
endpoint and its CA, `--unauthenticated anonymous`, `--audit-log`, and a pod whose
unchanged `kubernetes.config.load_incluster_config()` works under its Role (mount
namespaces, where this machine has them)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.kubelet.mountns_runner import mount_namespace_problem
from lmoperator.localstack import devcluster_running
from tests.integration.conformance.helpers import python_pod, wait_pod_phase
from tests.integration.harness import E2E, Cluster
from tests.kubeclient import core_api
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(E2E, reason="devcluster's own options")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("secured")
    audit = base / "audit.log"
    with devcluster_running(
        base / "state", "--audit-log", str(audit), "--unauthenticated", "anonymous"
    ) as (_, info):
        info["audit_log"] = str(audit)
        yield Cluster(Path(info["kubeconfig"]), info["url"], base / "kubectl-cache", base), info


def get(url: str, ca_file: str | None = None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_https_endpoint_and_kubeconfig(secured: tuple[Cluster, dict[str, Any]]) -> None:
    cluster, info = secured
    assert info["https_url"].startswith("https://127.0.0.1:")
    status, version = get(info["https_url"] + "/version", info["ca_file"])
    assert status == 200
    assert version["gitVersion"]
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(info["https_url"] + "/version", timeout=30)
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == "kubernetes-admin"
    assert cluster.kubeconfig.stat().st_mode & 0o777 == 0o600


def test_requests_without_credentials_are_anonymous(
    secured: tuple[Cluster, dict[str, Any]],
) -> None:
    _, info = secured
    assert get(info["url"] + "/version")[0] == 200  # system:public-info-viewer
    status, body = get(info["url"] + "/api/v1/namespaces/default/pods")
    assert status == 403
    assert body["message"] == (
        'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group '
        '"" in the namespace "default"'
    )


def test_audit_log(secured: tuple[Cluster, dict[str, Any]]) -> None:
    cluster, info = secured
    cluster.kubectl("get", "configmaps", "-n", "kube-system")
    get(info["url"] + "/api/v1/namespaces/default/secrets")
    log = Path(info["audit_log"])

    def events() -> list[dict[str, Any]] | None:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        wanted = [e for e in lines if e["requestURI"].startswith("/api/v1/namespaces/")]
        return lines if len(wanted) >= 2 else None

    found = wait_for(events, 10, "the audit events")
    listed = next(e for e in found if e["requestURI"].startswith("/api/v1/namespaces/kube-system"))
    assert listed["user"]["username"] == "kubernetes-admin"
    assert listed["user"]["groups"] == ["system:masters", "system:authenticated"]
    assert listed["verb"] == "list"
    assert listed["objectRef"] == {
        "resource": "configmaps",
        "namespace": "kube-system",
        "apiVersion": "v1",
    }
    assert listed["responseStatus"]["code"] == 200
    assert listed["userAgent"].startswith("kubectl/")
    anonymous = next(e for e in found if e["requestURI"].endswith("/default/secrets"))
    assert anonymous["user"] == {
        "username": "system:anonymous",
        "groups": ["system:unauthenticated"],
    }
    assert anonymous["responseStatus"]["code"] == 403
    assert anonymous["annotations"]["authorization.k8s.io/decision"] == "forbid"


IN_CLUSTER = """
import json, kubernetes
kubernetes.config.load_incluster_config()
core = kubernetes.client.CoreV1Api()
namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
answers = {"pods": [p.metadata.name for p in core.list_namespaced_pod(namespace).items]}
try:
    core.list_namespaced_secret(namespace)
except kubernetes.client.ApiException as error:
    answers["secrets"] = error.status
open("/scratch-of-pod/note", "w").write("written at the mount path")
answers["scratch"] = open("/scratch-of-pod/note").read()
print(json.dumps(answers))
"""
NO_MOUNT_NAMESPACES = mount_namespace_problem()


@pytest.mark.skipif(NO_MOUNT_NAMESPACES is not None, reason=str(NO_MOUNT_NAMESPACES))
def test_load_incluster_config_works_unchanged_in_a_pod(
    secured: tuple[Cluster, dict[str, Any]],
) -> None:
    cluster, _ = secured
    namespace = "incluster"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "serviceaccount", "operator", "-n", namespace)
    cluster.kubectl("create", "role", "pods", "--verb=get,list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create", "rolebinding", "operator-pods", "--role=pods",
        f"--serviceaccount={namespace}:operator", "-n", namespace,
    )  # fmt: skip
    pod = python_pod(
        "operator",
        IN_CLUSTER,
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch-of-pod"}],
    )
    pod["spec"]["serviceAccountName"] = "operator"
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    with cluster.api_client() as api:
        core = core_api(api)
        core.create_namespaced_pod(namespace, pod)
        wait_pod_phase(core, "operator", namespace, "Succeeded", "Failed")
        log = core.read_namespaced_pod_log("operator", namespace, container="main")
    assert json.loads(log.strip().splitlines()[-1]) == {
        "pods": ["operator"],
        "secrets": 403,
        "scratch": "written at the mount path",
    }
    assert not Path("/scratch-of-pod").exists()  # the mount point was made in the pod only
