"""kubectl with Deployments, with the oldest and the newest installed kubectl (1.27 and
1.33): apply, create deployment, get, describe, scale, and the rollout commands
(status, history, undo, restart, pause, resume)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.integration.conformance.helpers import CONTROLLER_TIMEOUT, POD_TIMEOUT
from tests.integration.conformance.workload_helpers import deployment, new_version
from tests.integration.harness import Cluster, kubectl_binary
from tests.waiting import wait_for


@pytest.fixture(params=[27, 33], ids=["kubectl1.27", "kubectl1.33"])
def minor(request: pytest.FixtureRequest) -> int:
    if kubectl_binary(request.param) is None:
        pytest.skip(f"kubectl 1.{request.param} is not installed next to the kubectl dispatcher")
    return int(request.param)


def cells(table: str, name: str) -> list[str]:
    for line in table.splitlines()[1:]:
        found = re.split(r"\s{2,}", line.strip())
        if found[0] == name or found[0].endswith("/" + name):
            return found
    raise AssertionError(f"no row {name} in\n{table}")


def apply(cluster: Cluster, namespace: str, minor: int, body: dict[str, object]) -> str:
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), minor=minor
    )
    return result.stdout


def rollout_status(cluster: Cluster, namespace: str, minor: int, name: str) -> str:
    timeout = f"--timeout={int(POD_TIMEOUT)}s"
    out = cluster.kubectl(
        "rollout", "status", f"deployment/{name}", "-n", namespace, timeout, minor=minor,
        timeout=POD_TIMEOUT + 10,
    ).stdout  # fmt: skip
    return out


def test_apply_get_and_rollout(cluster: Cluster, namespace: str, minor: int) -> None:
    body = deployment("web", replicas=2)
    assert "deployment.apps/web created" in apply(cluster, namespace, minor, body)
    assert 'deployment "web" successfully rolled out' in rollout_status(
        cluster, namespace, minor, "web"
    )

    table = cluster.kubectl("get", "deploy", "-n", namespace, minor=minor).stdout
    assert re.split(r"\s{2,}", table.splitlines()[0].strip()) == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE",
    ]  # fmt: skip
    assert cells(table, "web")[1:4] == ["2/2", "2", "2"]
    wide = cluster.kubectl("get", "rs", "-n", namespace, "-o", "wide", minor=minor).stdout
    rs_row = next(line for line in wide.splitlines() if line.startswith("web-"))
    assert "app=web,pod-template-hash=" in rs_row
    everything = cluster.kubectl("get", "all", "-n", namespace, "-o", "name", minor=minor).stdout
    assert "deployment.apps/web" in everything
    assert "replicaset.apps/web-" in everything

    # a new template, annotated with its cause, rolls out as revision 2
    body["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "v2"
    apply(cluster, namespace, minor, body)
    cluster.kubectl(
        "annotate", "deployment/web", "-n", namespace, "kubernetes.io/change-cause=v2", minor=minor
    )
    rollout_status(cluster, namespace, minor, "web")
    history = cluster.kubectl("rollout", "history", "deployment/web", "-n", namespace, minor=minor)
    lines = [line.split() for line in history.stdout.splitlines() if line and line[0].isdigit()]
    assert [line[0] for line in lines] == ["1", "2"]
    assert lines[1][1:] == ["v2"]

    # undo: the revision 1 ReplicaSet comes back as revision 3
    assert (
        "rolled back"
        in cluster.kubectl("rollout", "undo", "deployment/web", "-n", namespace, minor=minor).stdout
    )
    rollout_status(cluster, namespace, minor, "web")
    history = cluster.kubectl("rollout", "history", "deployment/web", "-n", namespace, minor=minor)
    revisions = [line.split()[0] for line in history.stdout.splitlines() if line[:1].isdigit()]
    assert revisions == ["2", "3"]
    detail = cluster.kubectl(
        "rollout", "history", "deployment/web", "-n", namespace, "--revision=3", minor=minor
    ).stdout
    assert re.search(r"VERSION:\s+v1", detail), detail

    described = cluster.kubectl("describe", "deployment", "web", "-n", namespace, minor=minor)
    assert "NewReplicaSetAvailable" in described.stdout
    assert "ScalingReplicaSet" in described.stdout


def test_restart_pause_resume_and_scale(cluster: Cluster, namespace: str, minor: int) -> None:
    apply(cluster, namespace, minor, deployment("svc", replicas=1))
    rollout_status(cluster, namespace, minor, "svc")
    cluster.kubectl("rollout", "restart", "deployment/svc", "-n", namespace, minor=minor)
    rollout_status(cluster, namespace, minor, "svc")
    template = cluster.kubectl(
        "get", "deployment", "svc", "-n", namespace, "-o",
        "jsonpath={.spec.template.metadata.annotations}", minor=minor,
    ).stdout  # fmt: skip
    assert "kubectl.kubernetes.io/restartedAt" in template

    cluster.kubectl("rollout", "pause", "deployment/svc", "-n", namespace, minor=minor)
    cluster.kubectl(
        "patch", "deployment/svc", "-n", namespace, "-p", yaml.safe_dump(new_version("v9")),
        minor=minor,
    )  # fmt: skip
    cluster.kubectl("scale", "deployment/svc", "--replicas=2", "-n", namespace, minor=minor)

    def replicas_ready() -> bool:
        out = cluster.kubectl("get", "deploy", "svc", "-n", namespace, minor=minor).stdout
        return cells(out, "svc")[1] == "2/2"

    wait_for(replicas_ready, POD_TIMEOUT, "a paused Deployment to scale")
    cluster.kubectl("rollout", "resume", "deployment/svc", "-n", namespace, minor=minor)
    rollout_status(cluster, namespace, minor, "svc")
    version = "{.spec.template.spec.containers[0].env[0].value}"
    env = cluster.kubectl(
        "get", "rs", "-n", namespace, "-o",
        f"jsonpath={{range .items[?(@.spec.replicas==2)]}}{version}{{end}}", minor=minor,
    ).stdout  # fmt: skip
    assert env == "v9"


def test_create_deployment(cluster: Cluster, namespace: str, minor: int) -> None:
    """kubectl's typed client sends the Deployment in protobuf."""
    out = cluster.kubectl(
        "create", "deployment", "made", "--image=python:3.12-alpine", "--replicas=2",
        "-n", namespace, "--", "python", "-c", "import time; time.sleep(3600)", minor=minor,
    ).stdout  # fmt: skip
    assert "deployment.apps/made created" in out
    rollout_status(cluster, namespace, minor, "made")
    selector = cluster.kubectl(
        "get", "deploy", "made", "-n", namespace, "-o", "jsonpath={.spec.selector.matchLabels.app}",
        minor=minor,
    ).stdout  # fmt: skip
    assert selector == "made"


def test_rollout_status_reports_a_missed_deadline(
    cluster: Cluster, namespace: str, minor: int
) -> None:
    body = deployment("stuck", replicas=1, progressDeadlineSeconds=2)
    body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["python", "-c", "raise SystemExit(1)"]},
        "periodSeconds": 1,
    }
    apply(cluster, namespace, minor, body)
    binary = kubectl_binary(minor)
    assert binary is not None
    result = subprocess.run(
        [
            binary, f"--kubeconfig={cluster.kubeconfig}", f"--cache-dir={cluster.cache_dir}",
            "rollout", "status", "deployment/stuck", "-n", namespace,
            f"--timeout={int(CONTROLLER_TIMEOUT + POD_TIMEOUT)}s",
        ],
        capture_output=True, text=True, timeout=CONTROLLER_TIMEOUT + POD_TIMEOUT + 10, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'deployment "stuck" exceeded its progress deadline' in result.stderr
