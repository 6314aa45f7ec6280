"""`helm install`, `upgrade` and `uninstall` of charts/elasticlm into devcluster's API
server with the Helm v4 SDK (helm-python-sdk), and `kubectl apply --dry-run=server` of
manifests/install.yaml.

Most tests run devcluster's API server without a kubelet, so no pod starts: what is
tested is that the API accepts every object as Helm sends it (server-side apply, release
Secrets, the keep policy of the CRDs). Two share one whole devcluster with its audit
log on: in cluster mode the chart's operator runs, `helm test` passes, the operator
trains, serves, scales and rolls, deletes a job past its TTL, is rolled by `helm
upgrade` to two replicas and fails over when its leader is killed, and uses every rule
of its ClusterRole; in namespaced mode it works in its namespace and asks nothing
outside it but discovery. Kinds devcluster does not serve yet are left out by
discovery, and named, so that the tests cover them as soon as it serves them.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from devcluster import paths
from devcluster.apiserver.app import ServerThread
from lmoperator.localstack import devcluster_running
from lmworker.corpus import write_corpus
from tests.integration.harness import kubectl_binary
from tests.kubeclient import api_client, apps_api, core_api, custom_api
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
        "lmtuningjobs.elasticlm.io",
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


# ---------------------------------------------------------------------------------------
# The chart's operator running in a whole devcluster (API server, kubelet, controllers),
# one per module, with the audit log on. Each test installs the chart, drives the
# operator, uninstalls it, and then reads what the operator asked of the API.

#: The rules that no request of the operator uses in the cluster-mode test, and why they
#: stay. Every other (apiGroup, resource, verb) that the chart grants must show up in
#: the audit log (templates/rbac.yaml says the same next to each rule).
UNUSED_BUT_NEEDED: dict[tuple[str, str, str], str] = {
    # The autoscaler writes its history when a minute of load closes; the test's
    # autoscaled phase is shorter than a minute (tests/integration/test_service.py
    # checks the ConfigMap's creation, owner and garbage collection).
    ("", "configmaps", "create"): "an autoscaled LMService's history, once a minute closes",
    ("", "configmaps", "patch"): "an autoscaled LMService's history, once a minute closes",
    # tests/integration/test_warm_spares.py promotes spares (the test here has none).
    ("", "secrets", "get"): "a warm spare's promotion order, which carries the job's token",
    # tests/integration/test_training_autoscale.py runs the job autoscaler.
    ("elasticlm.io", "lmtrainingjobs/scale", "patch"): "an autoscaled LMTrainingJob's size",
    # tests/integration/test_tuning_job.py runs an LMTuningJob.
    ("elasticlm.io", "lmtrainingjobs", "create"): "an LMTuningJob's trials",
    ("elasticlm.io", "lmtuningjobs", "patch"): "kopf's finalizer on an LMTuningJob",
    ("elasticlm.io", "lmtuningjobs/status", "patch"): "an LMTuningJob's status",
    # tests/integration/test_training_job.py opts a job out of its NetworkPolicy.
    ("networking.k8s.io", "networkpolicies", "patch"): "a changed --network-policy-* flag",
    ("networking.k8s.io", "networkpolicies", "delete"): "spec.networkPolicy.enabled: false",
}

#: Leader election in the HA phase, fast enough for a test: a standby takes over at most
#: LEASE_DURATION + RETRY_PERIOD after the leader's last renewal (docs/architecture.md).
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6, 4, 1
#: What a takeover may take beyond that: the requests on the wire, a loaded machine.
TAKEOVER_SLACK = 3.0


@dataclass
class Cluster:
    state: Path
    audit_log: Path
    server: ApiServer
    helm: Any

    @property
    def kubeconfig(self) -> Path:
        return self.server.kubeconfig

    @staticmethod
    def audit_mark() -> str:
        """Now, as the audit log writes times: requests received later belong to what
        follows (a watch is written when it ends, so an earlier one may come later)."""
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def operator_requests(self, since: str) -> list[dict[str, Any]]:
        lines = self.audit_log.read_text().splitlines(keepends=True)
        events = [json.loads(line) for line in lines if line.endswith("\n")]
        return [
            e
            for e in events
            if e.get("user", {}).get("username") == OPERATOR_USER
            and e["requestReceivedTimestamp"] >= since
        ]

    def install(self, values: dict[str, Any]) -> None:
        # Pods share the host's network in devcluster: the operator binds its pod IP.
        values = {**values, "metrics": {"bindAddress": "$(POD_IP)"}}
        release = self.helm.install(
            str(CHART),
            "elasticlm",
            values,
            namespace=NAMESPACE,
            create_namespace=True,
            wait="watcher",
            timeout=120,
        )
        assert release["status"] == "deployed"

    def uninstall(self, core: Any) -> str:
        """`helm uninstall`, until the operator's pods are gone: its watches have ended
        and are in the audit log. Returns the audit mark of when it began."""
        began = self.audit_mark()
        self.helm.uninstall("elasticlm", wait="watcher", timeout=60)
        assert self.server.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"] == []
        wait_for(
            lambda: not operator_pods(core, terminating=True),
            timeout=60,
            what="the operator's pods gone",
        )
        return began


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("helm-e2e")
    state, audit_log = root / "devcluster", root / "audit.log"
    with devcluster_running(state, "--audit-log", str(audit_log)) as (_, info):
        kubeconfig = Path(info["kubeconfig"])
        helm = helm_python.Config(kubeconfig_path=str(kubeconfig), namespace=NAMESPACE)
        yield Cluster(state, audit_log, ApiServer(info["url"], kubeconfig), helm)


def operator_pods(core: Any, *, terminating: bool = False) -> list[Any]:
    pods = core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=operator"
    ).items
    return [p for p in pods if terminating or p.metadata.deletion_timestamp is None]


def operator_args(pod: Any) -> list[str]:
    return list(pod.spec.containers[0].args or [])


def training_job(
    cluster: Cluster, namespace: str, name: str, steps: int, **run_policy: Any
) -> dict[str, Any]:
    """The example job on one worker, shortened, with its corpus written to its claim."""
    job = yaml.safe_load((ROOT / "manifests" / "examples" / "training-job.yaml").read_text())
    job["metadata"]["name"] = name
    spec = job["spec"]
    spec["replicas"] = 1
    spec["elastic"].update(minReplicas=1, maxReplicas=1)
    spec["training"].update(steps=steps, globalBatchSize=8, warmupSteps=2)
    spec["checkpoint"].update(path=name, intervalSteps=max(steps // 2, 1))
    spec["runPolicy"].update(run_policy)
    corpus = paths.claim_dir(cluster.state, namespace, spec["data"]["claimName"]) / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus, n_bytes=200_000, seed=1)
    return dict(job)


class Objects:
    """Our custom objects in one namespace, as the cluster's admin sees them."""

    def __init__(self, custom: Any, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace

    def create(self, plural: str, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            "elasticlm.io", "v1alpha1", self.namespace, plural, body
        )

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(
                "elasticlm.io", "v1alpha1", self.namespace, plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(obj)

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "elasticlm.io", "v1alpha1", self.namespace, plural, name, body
        )

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict((self.get(plural, name) or {}).get("status") or {})

    def wait_phase(self, plural: str, name: str, phase: str, timeout: float = 180) -> None:
        def reached() -> bool:
            status = self.status(plural, name)
            assert status.get("phase") != "Failed", status
            return status.get("phase") == phase

        wait_for(reached, timeout=timeout, what=f"{plural}/{name} {phase}")


def granted_triples(rules: list[Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
    }


def used_triples(requests: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    used = set()
    for event in requests:
        ref = event.get("objectRef")
        if ref is None or event["responseStatus"]["code"] in (401, 403):
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return used


def refused(requests: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [
        (e["verb"], e["requestURI"], e["responseStatus"]["code"])
        for e in requests
        if e["responseStatus"]["code"] in (401, 403)
    ]


def refused_while_granted(
    requests: list[dict[str, Any]], uninstalled: str, granted: set[tuple[str, str, str]]
) -> list[tuple[str, str, int]]:
    """The operator's refused requests that its RBAC should have allowed.

    `helm uninstall` deletes the Deployment and, in the same breath, the (Cluster)Roles
    and bindings; the pods stop a moment later, when the garbage collector and the
    kubelet get to them. A request in between (a renewal of the Lease, its release on
    SIGTERM, a watch that reconnects) is refused because the permission has just been
    revoked, as on any cluster. Those are allowed only for what the chart had granted;
    any other refusal, and every refusal before the uninstall began, is a gap."""
    revoked = [
        e
        for e in requests
        if e["requestReceivedTimestamp"] >= uninstalled
        and (ref := e.get("objectRef")) is not None
        and (
            ref.get("apiGroup", ""),
            ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else ""),
            e["verb"],
        )
        in granted
    ]
    return refused([e for e in requests if not any(e is r for r in revoked)])


@pytest.mark.timeout(600)
def test_cluster_mode_trains_serves_rolls_fails_over_and_uses_every_rule(
    cluster: Cluster,
) -> None:
    """The operator pod reaches the API with its service account's token (in-cluster
    config, no kubeconfig) under exactly the chart's RBAC: it trains a job, serves it
    through an LMService that it scales (by hand and by its autoscaler) and rolls,
    deletes a job past its TTL; `helm upgrade` to two replicas rolls it; the leader
    killed, the standby takes over within the documented time and the job in progress
    succeeds. It is never refused (but by `helm uninstall` revoking its rules), and
    every rule the chart grants it is used (or named in UNUSED_BUT_NEEDED with its
    reason)."""
    mark = cluster.audit_mark()
    cluster.install({})
    tested = cluster.helm.test("elasticlm", timeout=120, logs=True)
    assert "the operator's metrics are there" in tested["logs"]

    with api_client(cluster.kubeconfig) as api:
        core, apps = core_api(api), apps_api(api)
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        leases: Any = kubernetes.client.CoordinationV1Api(api)
        objects = Objects(custom_api(api), "default")
        (first_pod,) = operator_pods(core)
        assert "--leader-elect" not in operator_args(first_pod)

        # Train, and serve what was trained.
        objects.create("lmtrainingjobs", training_job(cluster, "default", "tiny-lm", steps=20))
        objects.wait_phase("lmtrainingjobs", "tiny-lm", "Succeeded")
        objects.create("lmservices", served_model("chat", "tiny-lm"))
        objects.wait_phase("lmservices", "chat", "Ready")
        deployment = apps.read_namespaced_deployment("chat-server", "default")
        template = deployment.spec.template.to_dict()

        # Scale up by hand, and down by the autoscaler: with no load it takes the
        # service to its minimum through the LMService's scale subresource, and the
        # servers' Deployment follows (the scale subresources; deletion costs on the
        # servers)...
        objects.patch("lmservices", "chat", {"spec": {"replicas": 2}})
        wait_for(
            lambda: len(server_pods(core, "chat")) == 2, timeout=60, what="a second server pod"
        )
        objects.patch("lmservices", "chat", {"spec": {"autoscaling": IDLE_AUTOSCALING}})
        wait_for(
            lambda: apps.read_namespaced_deployment("chat-server", "default").spec.replicas == 1,
            timeout=60,
            what="the servers' Deployment scaled back to 1 by the autoscaler",
        )
        history = objects.status("lmservices", "chat").get("scalingHistory") or []
        assert [(d["from"], d["to"]) for d in history if d["from"] != d["to"]] == [(2, 1)], history
        assert (objects.get("lmservices", "chat") or {}).get("spec", {}).get("replicas") == 1
        objects.patch("lmservices", "chat", {"spec": {"autoscaling": None}})
        # ... and roll the servers to a changed template.
        objects.patch("lmservices", "chat", {"spec": {"serving": {"maxNewTokens": 16}}})
        wait_for(
            lambda: (
                apps.read_namespaced_deployment("chat-server", "default").spec.template.to_dict()
                != template
            ),
            timeout=60,
            what="the servers' Deployment rolled to the new template",
        )
        # The servers are done with: spare the CPU for what follows.
        objects.patch("lmservices", "chat", {"spec": {"replicas": 0}})

        # `helm upgrade` with changed values rolls the operator: two replicas, leader
        # election on, timings short enough for a test.
        cluster.helm.upgrade(
            str(CHART),
            "elasticlm",
            {
                "metrics": {"bindAddress": "$(POD_IP)"},
                "replicaCount": 2,
                "extraArgs": [
                    f"--leader-election-lease-duration={LEASE_DURATION}",
                    f"--leader-election-renew-deadline={RENEW_DEADLINE}",
                    f"--leader-election-retry-period={RETRY_PERIOD}",
                ],
            },
            wait="watcher",
            timeout=120,
        )

        def rolled() -> list[Any] | None:
            pods = operator_pods(core, terminating=True)
            names = [p.metadata.name for p in pods]
            new = [p for p in pods if "--leader-elect" in operator_args(p)]
            ready = [p for p in new if p.status.phase == "Running"]
            return new if first_pod.metadata.name not in names and len(ready) == 2 else None

        replicas = wait_for(rolled, timeout=120, what="the operator rolled to two new replicas")
        for pod in replicas:  # the changed values reached the new pods
            assert f"--leader-election-lease-duration={LEASE_DURATION}" in operator_args(pod)

        def holder() -> str | None:
            try:
                lease = leases.read_namespaced_lease("elasticlm-operator", NAMESPACE)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return str(lease.spec.holder_identity or "") or None

        leader_id = wait_for(holder, timeout=60, what="a leader holds the Lease")
        (leader,) = [p for p in replicas if leader_id.startswith(p.metadata.name + "_")]

        # A job in progress when the leader dies; once finished it deletes itself. Its
        # length: status.step shows the workers' step up to about 10 s late (a scrape
        # every 5 s, a progress write at most every 4 s), and the job must still be
        # training when the test sees that step. 300 steps train for about 20 s on an
        # idle core of this machine (60 steps ended before a scrape ever showed one).
        objects.create(
            "lmtrainingjobs",
            training_job(cluster, "default", "ha", steps=300, ttlSecondsAfterFinished=5),
        )
        wait_for(
            lambda: (
                objects.status("lmtrainingjobs", "ha").get("phase") == "Running"
                and objects.status("lmtrainingjobs", "ha").get("step", 0) >= 1
            ),
            timeout=120,
            what="the job training under the first leader",
        )
        core.delete_namespaced_pod(leader.metadata.name, NAMESPACE, grace_period_seconds=0)
        killed = time.monotonic()
        assert objects.status("lmtrainingjobs", "ha")["phase"] == "Running"

        def taken_over() -> str | None:
            h = holder()
            return h if h and not h.startswith(leader.metadata.name + "_") else None

        successor = wait_for(taken_over, timeout=60, what="a standby takes the Lease over")
        takeover = time.monotonic() - killed
        assert takeover <= LEASE_DURATION + RETRY_PERIOD + TAKEOVER_SLACK, takeover
        assert any(successor.startswith(p.metadata.name + "_") for p in replicas)
        objects.wait_phase("lmtrainingjobs", "ha", "Succeeded")
        wait_for(
            lambda: objects.get("lmtrainingjobs", "ha") is None,
            timeout=60,
            what="the finished job deleted after ttlSecondsAfterFinished",
        )

        cluster_role = rbac.read_cluster_role("elasticlm-operator")
        election_role = rbac.read_namespaced_role("elasticlm-operator-leader-election", NAMESPACE)
        uninstalled = cluster.uninstall(core)

    requests = cluster.operator_requests(mark)
    assert requests, f"no request of {OPERATOR_USER} in the audit log"
    granted = granted_triples(cluster_role.rules) | granted_triples(election_role.rules)
    assert refused_while_granted(requests, uninstalled, granted) == []
    unused = granted_triples(cluster_role.rules) - used_triples(requests)
    # A rule nothing used: remove it from the chart, or say here (and in rbac.yaml) why
    # it stays. A rule named here that is now used: take it off the list.
    assert sorted(unused) == sorted(UNUSED_BUT_NEEDED)
    in_release_namespace = [
        r for r in requests if (r.get("objectRef") or {}).get("namespace") == NAMESPACE
    ]
    assert granted_triples(election_role.rules) - used_triples(in_release_namespace) == set()
    print(f"takeover {takeover:.1f}s")


#: Autoscaling that acts within seconds: no load takes the service to its minimum.
IDLE_AUTOSCALING = {
    "minReplicas": 1,
    "maxReplicas": 2,
    "metrics": [{"type": "InFlightRequests", "target": 1}],
    "stableWindowSeconds": 6,
    "panicWindowSeconds": 2,
    "scaleDown": {"stabilizationSeconds": 0},
}


def served_model(name: str, job: str) -> dict[str, Any]:
    return {
        "apiVersion": "elasticlm.io/v1alpha1",
        "kind": "LMService",
        "metadata": {"name": name},
        "spec": {
            "model": {"fromTrainingJob": {"name": job}},
            "precision": "fp32",
            "serving": {"maxBatchSize": 4, "maxNewTokens": 32},
            "worker": {"resources": {"requests": {"cpu": "500m"}}},
        },
    }


def server_pods(core: Any, service: str) -> list[Any]:
    pods = core.list_namespaced_pod(
        "default", label_selector=f"elasticlm.io/service={service}"
    ).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


@pytest.mark.timeout(300)
def test_namespaced_mode_works_in_its_namespace_and_nowhere_else(cluster: Cluster) -> None:
    """watchNamespaces [team-a]: a job there trains; a job in team-b is left alone; the
    operator asks nothing outside team-a but discovery. (The issue allows CRD reads and
    kopf's peering objects too; with scanning off and standalone it needs neither.)"""
    with api_client(cluster.kubeconfig) as api:
        core = core_api(api)
        for namespace in ("team-a", "team-b"):
            core.create_namespace({"metadata": {"name": namespace}})
        mark = cluster.audit_mark()
        cluster.install({"watchNamespaces": ["team-a"]})
        (pod,) = operator_pods(core)
        assert "--namespace=team-a" in operator_args(pod)
        team_a, team_b = Objects(custom_api(api), "team-a"), Objects(custom_api(api), "team-b")
        team_b.create("lmtrainingjobs", training_job(cluster, "team-b", "ignored", steps=10))
        team_a.create("lmtrainingjobs", training_job(cluster, "team-a", "tiny-lm", steps=10))
        team_a.wait_phase("lmtrainingjobs", "tiny-lm", "Succeeded")
        # The operator has handled team-a's job from start to end: team-b's, created
        # before it, would have been handled by now too.
        ignored = team_b.get("lmtrainingjobs", "ignored")
        assert ignored is not None
        assert "status" not in ignored
        assert not ignored["metadata"].get("finalizers")
        assert core.list_namespaced_pod("team-b").items == []
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        role = rbac.read_namespaced_role("elasticlm-operator", "team-a")
        uninstalled = cluster.uninstall(core)

    requests = cluster.operator_requests(mark)
    assert requests, f"no request of {OPERATOR_USER} in the audit log"
    assert refused_while_granted(requests, uninstalled, granted_triples(role.rules)) == []
    outside = sorted(
        {
            (e["verb"], ref.get("apiGroup", ""), ref["resource"], ref.get("namespace", ""))
            for e in requests
            if (ref := e.get("objectRef")) is not None and ref.get("namespace") != "team-a"
        }
    )
    assert outside == []
    non_resource = {e["requestURI"].split("?")[0] for e in requests if e.get("objectRef") is None}
    assert all(uri.startswith(("/api", "/apis", "/version")) for uri in non_resource), non_resource
