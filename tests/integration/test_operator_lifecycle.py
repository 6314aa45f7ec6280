"""The real operator against devcluster in simulate mode (pods run no processes).

Checks what the operator does with the API, not training: children and their labels
and owners, manual rescaling, invalid specs, garbage collection of children, and that a
restarted operator creates no duplicates.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from lmoperator.api.kinds import TRAINING_JOB
from lmoperator.localstack import stop_process
from tests.integration.harness import E2E, Cluster
from tests.kubeclient import core_api, custom_api
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "training-job.yaml"
GROUP, VERSION, PLURAL = TRAINING_JOB.group, TRAINING_JOB.version, TRAINING_JOB.plural

pytestmark = pytest.mark.skipif(E2E, reason="needs devcluster's simulate mode")


@pytest.fixture
def sim_namespace(sim_cluster: Cluster) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with sim_cluster.api_client() as api:
        core_api(api).create_namespace({"metadata": {"name": name}})
    return name


@contextmanager
def operator_process(cluster: Cluster, namespace: str, log: Path) -> Iterator[None]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    with log.open("a") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lmoperator.cli",
                "operator",
                "--namespace",
                namespace,
                "--metrics-port",
                "0",
                "--verbose",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            stop_process(process, timeout=20)
    assert process.returncode in (0, -15), log.read_text()


def job_manifest(name: str, replicas: int = 2, **worker: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["replicas"] = replicas
    doc["spec"]["worker"].update(worker)
    return doc


class Api:
    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self.core = core_api(api)
        self.custom = custom_api(api)
        self.namespace = namespace

    def create(self, doc: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, doc)

    def job(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.job(name) or {}).get("status") or {})

    def pods(self, job: str) -> dict[str, Any]:
        items = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"elasticlm.io/job={job}"
        ).items
        return {p.metadata.name: p for p in items}

    def services(self, job: str) -> dict[str, Any]:
        items = self.core.list_namespaced_service(
            self.namespace, label_selector=f"elasticlm.io/job={job}"
        ).items
        return {s.metadata.name: s for s in items}


def names_are(api: Api, job: str, expected: set[str]) -> Callable[[], bool]:
    return lambda: set(api.pods(job)) == expected


def test_job_lifecycle(sim_cluster: Cluster, sim_namespace: str, tmp_path: Path) -> None:
    log = tmp_path / "operator.log"
    with sim_cluster.api_client() as client:
        api = Api(client, sim_namespace)
        with operator_process(sim_cluster, sim_namespace, log):
            api.create(job_manifest("lm"))
            wait_for(
                names_are(api, "lm", {"lm-rdzv", "lm-worker-0", "lm-worker-1"}),
                what=lambda: f"the rendezvous pod and 2 workers; operator log:\n{log.read_text()}",
            )
            uid = api.job("lm")["metadata"]["uid"]  # type: ignore[index]
            service = api.services("lm")["lm-rdzv"]
            assert service.spec.selector == {"elasticlm.io/job": "lm", "elasticlm.io/role": "rdzv"}
            for pod in [*api.pods("lm").values(), service]:
                (owner,) = pod.metadata.owner_references
                assert (owner.kind, owner.name, owner.uid, owner.controller) == (
                    "LMTrainingJob",
                    "lm",
                    uid,
                    True,
                )
            worker = api.pods("lm")["lm-worker-1"]
            assert worker.metadata.labels == {
                "elasticlm.io/job": "lm",
                "elasticlm.io/role": "worker",
                "elasticlm.io/index": "1",
            }
            env = {e.name: e.value for e in worker.spec.containers[0].env}
            assert env["ELASTICLM_RDZV_ADDR"] == f"{service.spec.cluster_ip}:29400"
            wait_for(
                lambda: (
                    api.status("lm").get("phase") == "Running"
                    and api.status("lm").get("readyReplicas") == 2
                ),
                what="phase Running with 2 ready workers",
            )
            assert api.status("lm")["selector"] == "elasticlm.io/job=lm,elasticlm.io/role=worker"

            # Scale up through the scale subresource, as `kubectl scale` does.
            sim_cluster.kubectl("-n", sim_namespace, "scale", "lmtj/lm", "--replicas=3")
            wait_for(
                names_are(api, "lm", {"lm-rdzv", "lm-worker-0", "lm-worker-1", "lm-worker-2"}),
                what="worker 2",
            )
            wait_for(lambda: api.status("lm").get("readyReplicas") == 3, what="3 ready workers")
            history = api.status("lm")["scalingHistory"]
            assert (history[-1]["from"], history[-1]["to"]) == (2, 3)

            # Scale down: the highest indexes go.
            api.custom.patch_namespaced_custom_object(
                GROUP, VERSION, sim_namespace, PLURAL, "lm", {"spec": {"replicas": 1}}
            )
            wait_for(names_are(api, "lm", {"lm-rdzv", "lm-worker-0"}), what="scale down to 1")
            before = {n: p.metadata.uid for n, p in api.pods("lm").items()}

        # A restarted operator adopts what exists and creates nothing twice.
        with operator_process(sim_cluster, sim_namespace, log):
            wait_for(
                lambda: any("resume" in line.lower() for line in log.read_text().splitlines()),
                what="the restarted operator to resume the job",
            )
            wait_for(lambda: api.status("lm").get("replicas") == 1, what="status after restart")
            after = {n: p.metadata.uid for n, p in api.pods("lm").items()}
            assert after == before

            api.custom.delete_namespaced_custom_object(GROUP, VERSION, sim_namespace, PLURAL, "lm")
            wait_for(lambda: api.job("lm") is None, what="the job to be deleted")
            wait_for(
                lambda: not api.pods("lm") and not api.services("lm"),
                what="the garbage collector to delete the children",
            )


def test_invalid_pod_template_fails_the_job(
    sim_cluster: Cluster, sim_namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    template = {
        "spec": {"containers": [{"name": "worker", "securityContext": {"privileged": True}}]}
    }
    with sim_cluster.api_client() as client:
        api = Api(client, sim_namespace)
        with operator_process(sim_cluster, sim_namespace, log):
            api.create(job_manifest("bad", podTemplate=template))
            wait_for(
                lambda: api.status("bad").get("phase") == "Failed",
                what=lambda: f"phase Failed; operator log:\n{log.read_text()}",
            )
            (failed,) = [c for c in api.status("bad")["conditions"] if c["type"] == "Failed"]
            assert failed["reason"] == "Invalid"
            assert (
                "spec.worker.podTemplate.spec.containers[worker].securityContext.privileged"
                in (failed["message"])
            )
            assert not api.pods("bad")
            assert not api.services("bad")
            events = api.core.list_namespaced_event(
                sim_namespace, field_selector="involvedObject.name=bad"
            ).items
            assert any(e.reason == "Invalid" and e.type == "Warning" for e in events)
