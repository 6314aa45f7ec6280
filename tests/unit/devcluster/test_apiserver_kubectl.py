"""The devcluster API server against the real kubectl, oldest (1.27) and newest (1.33).

`/usr/bin/kubectl` on this image dispatches to `kubectl.1.27` ... `kubectl.1.33` (next to
its real path) by the server's `/version`, so a server reporting v1.27.0 gets kubectl
1.27. The tests skip when no such kubectl exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devcluster import paths
from devcluster.apiserver.app import ServerThread
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]
KUBECTL = shutil.which("kubectl")


def versioned_kubectl(minor: int) -> bool:
    if KUBECTL is None:
        return False
    real = Path(os.path.realpath(KUBECTL))
    return (real.parent / f"kubectl.1.{minor}").exists()


class Kubectl:
    def __init__(self, server: ServerThread, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "d", "cluster": {"server": server.url}}],
            "users": [{"name": "d", "user": {}}],
            "contexts": [
                {"name": "d", "context": {"cluster": "d", "user": "d", "namespace": "default"}}
            ],
            "current-context": "d",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        command = [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.workdir / "cache"),
            *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        assert KUBECTL is not None
        command = [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.workdir / "cache"),
            *args,
        ]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


@pytest.fixture(params=[27, 33], ids=["kubectl-1.27", "kubectl-1.33"])
def kubectl(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kubectl]:
    minor = int(request.param)
    if not versioned_kubectl(minor):
        pytest.skip(f"no kubectl 1.{minor} on this machine (needs the kubectl version dispatcher)")
    with ServerThread(tmp_path / "state", kubernetes_version=f"v1.{minor}.0") as server:
        yield Kubectl(server, tmp_path)


def test_kubectl_smoke(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    server_minor = version["serverVersion"]["minor"]
    assert version["clientVersion"]["minor"].rstrip("+") == server_minor  # the dispatcher's pick

    applied = kubectl("apply", "-f", str(ROOT / "crds")).stdout
    assert "lmtrainingjobs.elasticlm.io created" in applied
    kubectl("wait", "--for", "condition=Established", "crd/lmtrainingjobs.elasticlm.io")
    examples = kubectl("apply", "-f", str(ROOT / "manifests" / "examples")).stdout
    assert "lmtrainingjob.elasticlm.io/tiny-lm created" in examples
    assert "lmtrainingjob.elasticlm.io/tiny-lm-auto created" in examples
    assert "lmservice.elasticlm.io/tiny-lm created" in examples
    again = kubectl("apply", "-f", str(ROOT / "manifests" / "examples")).stdout
    assert "lmtrainingjob.elasticlm.io/tiny-lm unchanged" in again

    table = kubectl("get", "lmtj").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "REPLICAS", "READY", "WORLD", "STEP", "AGE"]
    rows = {row.split()[0]: row.split() for row in table[1:]}
    assert rows["tiny-lm"][:2] == ["tiny-lm", "2"]
    wide = kubectl("get", "lmtj", "-o", "wide").stdout.splitlines()[0].split()
    assert "LOSS" in wide
    assert "TOKENS/S" in wide
    categories = kubectl("get", "elasticlm").stdout
    assert "lmtrainingjob.elasticlm.io/tiny-lm" in categories
    assert "lmservice.elasticlm.io/tiny-lm" in categories

    obj = yaml.safe_load(kubectl("get", "lmtj", "tiny-lm", "-o", "yaml").stdout)
    assert obj["spec"]["replicas"] == 2
    assert obj["metadata"]["generation"] == 1

    assert "scaled" in kubectl("scale", "lmtj/tiny-lm", "--replicas=3").stdout
    replicas = kubectl("get", "lmtj", "tiny-lm", "-o", "jsonpath={.spec.replicas}").stdout
    assert replicas == "3"
    refused = kubectl("scale", "lmtj/tiny-lm", "--replicas=7", check=False)
    assert refused.returncode != 0
    assert "is invalid" in refused.stderr

    explained = kubectl("explain", "lmtj.spec.elastic").stdout
    assert "minReplicas" in explained
    described = kubectl("describe", "lmtj", "tiny-lm").stdout
    assert "Name:" in described
    assert "tiny-lm" in described

    invalid = ROOT / "manifests" / "examples" / "training-job.yaml"
    bad = yaml.safe_load(invalid.read_text())
    bad["metadata"]["name"] = "bad"
    bad["spec"]["bogus"] = True
    bad_file = kubectl.workdir / "bad.yaml"
    bad_file.write_text(yaml.safe_dump(bad))
    strict = kubectl("apply", "-f", str(bad_file), check=False)
    assert strict.returncode != 0
    assert 'unknown field "spec.bogus"' in strict.stderr

    assert (
        'lmtrainingjob.elasticlm.io "tiny-lm" deleted'
        in kubectl("delete", "lmtj", "tiny-lm").stdout
    )
    kubectl("delete", "lmtj", "tiny-lm-auto")
    kubectl("delete", "lmtj", "smollm2-english")
    assert "No resources found" in kubectl("get", "lmtj").stderr


def test_kubectl_core_kinds_watch_and_logs(kubectl: Kubectl) -> None:
    manifest = kubectl.workdir / "web.yaml"
    manifest.write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - {name: main, image: python:3.11, ports: [{containerPort: 8000, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
"""
    )
    kubectl("apply", "-f", str(manifest))
    assert "unchanged" in kubectl("apply", "-f", str(manifest)).stdout
    pods = kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert pods[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert pods[1].split()[:3] == ["web", "0/1", "Pending"]
    services = kubectl("get", "svc", "web").stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert kubectl("get", "nodes").stdout.splitlines()[1].split()[:2] == ["devcluster", "Ready"]
    assert "Active" in kubectl("get", "ns", "default").stdout
    assert "PodScheduled" in kubectl("describe", "pod", "web").stdout
    explained = kubectl("explain", "pods.spec.containers.env").stdout
    assert "valueFrom" in explained

    pod = json.loads(kubectl("get", "pod", "web", "-o", "json").stdout)
    state_dir = kubectl.server.cluster.state_dir
    assert state_dir is not None
    log = paths.container_log_file(state_dir, "default", "web", pod["metadata"]["uid"], "main")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("serving on 8000\n")
    assert kubectl("logs", "web").stdout == "serving on 8000\n"

    watcher = kubectl.popen("get", "configmaps", "-w")
    lines: list[str] = []

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(line)

    def shown(data: str) -> bool:
        return any(line.split()[:2] == ["settings", data] for line in list(lines))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # kubectl lists, prints, then watches from the list's resourceVersion: a change
        # made once the listed row shows is a live event of the watch.
        wait_for(lambda: shown("1"), 30, lambda: f"the initial list; output {lines}")
        kubectl("patch", "configmap", "settings", "-p", '{"data":{"b":"2"}}')
        wait_for(lambda: shown("2"), 10, lambda: f"the watched change; output {lines}")
    finally:
        watcher.kill()
        watcher.wait()
        reader.join(timeout=5)
    assert lines[0].split() == ["NAME", "DATA", "AGE"]

    # kubectl's typed clients send these in protobuf
    kubectl("create", "configmap", "literal", "--from-literal=a=b")
    kubectl("create", "secret", "generic", "token", "--from-literal=t=s3cret")
    kubectl("create", "namespace", "team")
    kubectl("create", "serviceaccount", "robot")
    kubectl("create", "service", "clusterip", "plain", "--tcp=80:8080")
    created = json.loads(
        kubectl("get", "cm/literal", "secret/token", "svc/plain", "-o", "json").stdout
    )
    cm, secret, svc = created["items"]
    assert cm["data"] == {"a": "b"}
    assert secret["data"] == {"t": "czNjcmV0"}
    assert svc["spec"]["ports"][0]["targetPort"] == 8080
    assert kubectl("get", "ns", "team", "-o", "jsonpath={.status.phase}").stdout == "Active"
    assert kubectl("auth", "can-i", "delete", "pods").stdout.strip() == "yes"

    assert 'pod "web" deleted' in kubectl("delete", "pod", "web", "--wait=false").stdout
    assert "Terminating" in kubectl("get", "pod", "web").stdout
    kubectl("delete", "pod", "web", "--grace-period=0", "--force")
    assert "No resources found" in kubectl("get", "pods").stderr
