"""`helm install`, `upgrade` and `uninstall` of charts/elasticlm into devcluster's API
server with the Helm v4 SDK (helm-python-sdk), and `kubectl apply --dry-run=server` of
manifests/install.yaml.

Most tests run devcluster's API server without a kubelet, so no pod starts: what is
tested is that the API accepts every object as Helm sends it (server-side apply, release
Secrets, the keep policy of the CRDs). One runs a whole devcluster: the chart's operator
runs, `helm test` passes and the operator trains a job. Kinds devcluster does not serve
yet (RBAC) are left out by discovery, and named, so that the tests cover them as soon as
it serves them.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import paths
from devcluster.apiserver.app import ServerThread
from lmoperator.localstack import devcluster_running
from lmworker.corpus import write_corpus
from tests.integration.harness import kubectl_binary
from tests.kubeclient import api_client, core_api, custom_api
from tests.waiting import wait_for

helm_python = pytest.importorskip("helm_python", reason="needs helm-python-sdk (the [dev] extra)")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "elasticlm"
NAMESPACE = "elasticlm-system"
RBAC_GROUP = "rbac.authorization.k8s.io"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:elasticlm-operator"


@dataclass
class ApiServer:
    url: str
    kubeconfig: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def serves_group(self, group: str) -> bool:
        return any(g["name"] == group for g in self.get("/apis")["groups"])

    def operator_deployment(self) -> Any:
        return self.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/elasticlm-operator")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with ServerThread(tmp_path / "state", kubernetes_version="v1.33.0") as thread:
        kubeconfig = tmp_path / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "d", "cluster": {"server": thread.url}}],
            "users": [{"name": "d", "user": {}}],
            "contexts": [{"name": "d", "context": {"cluster": "d", "user": "d"}}],
            "current-context": "d",
        }
        kubeconfig.write_text(yaml.safe_dump(config))
        yield ApiServer(thread.url, kubeconfig)


def base_values(server: ApiServer) -> dict[str, Any]:
    """The defaults, less the RBAC objects while devcluster does not serve their API."""
    if server.serves_group(RBAC_GROUP):
        return {}
    return {"rbac": {"create": False, "aggregateToDefaultRoles": False}}


@pytest.mark.timeout(180)
def test_install_upgrade_and_uninstall(server: ApiServer) -> None:
    helm = helm_python.Config(kubeconfig_path=str(server.kubeconfig), namespace=NAMESPACE)
    values = base_values(server)
    first = {**values, "extraEnv": [{"name": "FIRST", "value": "1"}], "replicaCount": 1}
    release = helm.install(
        str(CHART), "elasticlm", first, namespace=NAMESPACE, create_namespace=True, timeout=60
    )
    assert release["status"] == "deployed"
    deployment = server.operator_deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "FIRST", "value": "1"} in container["env"]
    assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == "elasticlm"
    crd = server.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/lmservices.elasticlm.io"
    )
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    upgraded = helm.upgrade(str(CHART), "elasticlm", {**values, "replicaCount": 2}, timeout=60)
    assert upgraded["status"] == "deployed"
    assert upgraded["revision"] == 2
    assert server.operator_deployment()["spec"]["replicas"] == 2
    assert server.operator_deployment()["spec"]["strategy"]["type"] == "RollingUpdate"

    removed = helm.uninstall("elasticlm", timeout=60)
    assert "kept due to the resource policy" in removed["info"]
    crds = server.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "lmservices.elasticlm.io",
        "lmtrainingjobs.elasticlm.io",
    ]
    left = server.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
    assert left == []
    secrets = server.get(f"/api/v1/namespaces/{NAMESPACE}/secrets")["items"]
    assert [s["metadata"]["name"] for s in secrets if s.get("type") == "helm.sh/release.v1"] == []


@pytest.mark.timeout(180)
def test_upgrade_removes_what_the_chart_no_longer_renders(server: ApiServer) -> None:
    helm = helm_python.Config(kubeconfig_path=str(server.kubeconfig), namespace=NAMESPACE)
    values = base_values(server)
    first = {**values, "extraEnv": [{"name": "FIRST", "value": "1"}]}
    helm.install(str(CHART), "elasticlm", first, namespace=NAMESPACE, create_namespace=True)
    # Without values Helm reuses the release's last ones; --reset-values renders defaults.
    helm.upgrade(str(CHART), "elasticlm", values, reset_values=True)
    deployment = server.operator_deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "FIRST" not in [e["name"] for e in container["env"]]
    assert "PYTHONUNBUFFERED" in [e["name"] for e in container["env"]]
    helm_fields = [e for e in deployment["metadata"]["managedFields"] if e["operation"] == "Apply"]
    assert len(helm_fields) == 1
    env = helm_fields[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert 'k:{"name":"FIRST"}' not in env['k:{"name":"operator"}']["f:env"]


@pytest.mark.timeout(120)
def test_install_yaml_passes_a_server_dry_run(server: ApiServer, tmp_path: Path) -> None:
    kubectl = kubectl_binary(33)
    if kubectl is None:
        pytest.skip("no kubectl 1.33 on this machine")
    objects = [
        o for o in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if o
    ]
    served = [o for o in objects if not o["apiVersion"].startswith(RBAC_GROUP + "/")]
    if server.serves_group(RBAC_GROUP):
        served = objects
    else:
        assert {o["kind"] for o in objects} - {o["kind"] for o in served} == {
            "ClusterRole",
            "ClusterRoleBinding",
        }
    # The namespace exists for real: a dry run creates nothing that later objects find.
    namespace, rest = served[0], served[1:]
    assert namespace["kind"] == "Namespace"
    manifest = tmp_path / "install.yaml"
    base = [kubectl, f"--kubeconfig={server.kubeconfig}", f"--cache-dir={tmp_path / 'cache'}"]
    subprocess.run(
        [*base, "create", "namespace", NAMESPACE], check=True, capture_output=True, timeout=60
    )
    manifest.write_text(yaml.safe_dump_all(rest))
    result = subprocess.run(
        [*base, "apply", "--server-side", "--dry-run=server", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(rest)
    assert server.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"] == []


def _job(steps: int) -> dict[str, Any]:
    """The example job, shortened."""
    job = yaml.safe_load((ROOT / "manifests" / "examples" / "training-job.yaml").read_text())
    job["spec"]["training"]["steps"] = steps
    job["spec"]["checkpoint"]["intervalSteps"] = steps // 2
    return dict(job)


@pytest.mark.timeout(300)
def test_the_charts_operator_runs_in_devcluster_and_trains_a_job(tmp_path: Path) -> None:
    """The operator pod reaches the API with its service account's token (in-cluster
    config, no kubeconfig), under exactly the chart's RBAC, and is never refused."""
    state = tmp_path / "devcluster"
    audit_log = tmp_path / "audit.log"
    with devcluster_running(state, "--audit-log", str(audit_log)) as (_, info):
        kubeconfig = Path(info["kubeconfig"])
        server = ApiServer(info["url"], kubeconfig)
        helm = helm_python.Config(kubeconfig_path=str(kubeconfig), namespace=NAMESPACE)
        # Pods share the host's network in devcluster: the operator binds its pod IP.
        values = {**base_values(server), "metrics": {"bindAddress": "$(POD_IP)"}}
        release = helm.install(
            str(CHART),
            "elasticlm",
            values,
            namespace=NAMESPACE,
            create_namespace=True,
            wait="watcher",
            timeout=120,
        )
        assert release["status"] == "deployed"
        tested = helm.test("elasticlm", timeout=120, logs=True)
        assert "the operator's metrics are there" in tested["logs"]

        corpus = paths.claim_dir(state, "default", "tiny-lm-data") / "corpus.txt"
        write_corpus(corpus, n_bytes=300_000, seed=1)
        with api_client(kubeconfig) as api:
            custom = custom_api(api)
            custom.create_namespaced_custom_object(
                "elasticlm.io", "v1alpha1", "default", "lmtrainingjobs", _job(steps=30)
            )

            def phase() -> str | None:
                job = custom.get_namespaced_custom_object(
                    "elasticlm.io", "v1alpha1", "default", "lmtrainingjobs", "tiny-lm"
                )
                value = (job.get("status") or {}).get("phase")
                assert value != "Failed", job["status"]
                return value if value == "Succeeded" else None

            wait_for(phase, timeout=180, what="the chart's operator trains the job")
            operator_pods = core_api(api).list_namespaced_pod(
                NAMESPACE, label_selector="app.kubernetes.io/component=operator"
            )
            assert [p.status.phase for p in operator_pods.items] == ["Running"]
            assert all(
                (s.restart_count or 0) == 0
                for p in operator_pods.items
                for s in p.status.container_statuses
            )
        operator_requests = [
            event
            for event in map(json.loads, audit_log.read_text().splitlines())
            if event["user"]["username"] == OPERATOR_USER
        ]
        assert operator_requests, f"no request of {OPERATOR_USER} in the audit log"
        refused = [
            (e["verb"], e["requestURI"], e["responseStatus"]["code"])
            for e in operator_requests
            if e["responseStatus"]["code"] in (401, 403)
        ]
        assert refused == []
        verbs = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in operator_requests}
        assert ("create", "pods") in verbs  # it made the job's workers itself
        assert ("patch", "lmtrainingjobs") in verbs
        helm.uninstall("elasticlm", wait="watcher", timeout=60)
        assert server.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"] == []
