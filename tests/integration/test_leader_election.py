"""Two operators with --leader-elect against devcluster (simulate mode): exactly one acts.

The Lease is the truth of who leads; that the standby does nothing is read from its own
metrics (it never ran a reconcile pass) and from its log. A crash (SIGKILL) of the
leader hands over within the lease duration plus one retry period, and the job goes on
under the new leader up to Succeeded; a graceful stop (SIGTERM) releases the Lease, so
the standby takes over on its next try.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from lmoperator.api.kinds import LEASE, TRAINING_JOB
from lmoperator.localstack import free_port, stop_process
from tests.integration.harness import E2E, Cluster
from tests.kubeclient import core_api, custom_api
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "training-job.yaml"
LEASE_NAME = "elasticlm-operator"
# Shorter than Kubernetes' 15/10/2 s to keep the test short; the bench measures those.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6, 4.0, 1.0
# What a loaded 2-core machine may add to a handover (a poll, a process's scheduling).
SLACK = 4.0

pytestmark = pytest.mark.skipif(E2E, reason="needs devcluster's simulate mode")


@pytest.fixture
def api(sim_cluster: Cluster) -> Iterator[Api]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with sim_cluster.api_client() as client:
        core_api(client).create_namespace({"metadata": {"name": name}})
        yield Api(client, name)


class Api:
    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.core = core_api(client)
        self.custom = custom_api(client)
        self.namespace = namespace

    def lease(self) -> dict[str, Any]:
        try:
            spec: dict[str, Any] = self.custom.get_namespaced_custom_object(
                LEASE.group, LEASE.version, self.namespace, LEASE.plural, LEASE_NAME
            )["spec"]
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return spec

    def holder(self) -> str:
        return str(self.lease().get("holderIdentity") or "")

    def create_job(self, name: str, replicas: int = 2) -> None:
        doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["replicas"] = replicas
        self.custom.create_namespaced_custom_object(
            TRAINING_JOB.group, TRAINING_JOB.version, self.namespace, TRAINING_JOB.plural, doc
        )

    def scale(self, name: str, replicas: int) -> None:
        self.custom.patch_namespaced_custom_object(
            TRAINING_JOB.group,
            TRAINING_JOB.version,
            self.namespace,
            TRAINING_JOB.plural,
            name,
            {"spec": {"replicas": replicas}},
        )

    def phase(self, name: str) -> str | None:
        job = self.custom.get_namespaced_custom_object(
            TRAINING_JOB.group, TRAINING_JOB.version, self.namespace, TRAINING_JOB.plural, name
        )
        return (job.get("status") or {}).get("phase")

    def pods(self, job: str) -> set[str]:
        items = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"elasticlm.io/job={job}"
        ).items
        return {p.metadata.name for p in items if not p.metadata.deletion_timestamp}

    def complete(self, pod: str, step: int) -> None:
        """What a worker's container leaves when training is done (simulated pods run no
        processes): exit 0 with its completion report."""
        report = json.dumps({"completed": True, "step": step, "loss": 2.5})
        self.core.patch_namespaced_pod_status(
            pod,
            self.namespace,
            {
                "status": {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        {
                            "name": "worker",
                            "ready": False,
                            "started": False,
                            "restartCount": 0,
                            "image": "elasticlm-worker",
                            "imageID": "elasticlm-worker",
                            "lastState": {},
                            "state": {
                                "terminated": {
                                    "exitCode": 0,
                                    "reason": "Completed",
                                    "message": report,
                                }
                            },
                        }
                    ],
                }
            },
        )


class Operator:
    """`elasticlm operator --leader-elect` as its own process, named by POD_NAME."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = log_dir / f"{name}.log"
        command = [
            sys.executable,
            "-P",
            "-m",
            "lmoperator",
            "operator",
            "--namespace",
            namespace,
            "--metrics-port",
            str(self.port),
            "--leader-elect",
            "--leader-election-namespace",
            namespace,
            "--leader-election-lease-duration",
            str(LEASE_DURATION),
            "--leader-election-renew-deadline",
            str(RENEW_DEADLINE),
            "--leader-election-retry-period",
            str(RETRY_PERIOD),
        ]
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "POD_NAME": name}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (0 when it has none)."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def leader_and_standby(api: Api, ops: list[Operator]) -> tuple[Operator, Operator]:
    holder = wait_for(api.holder, what="a holder of the lease")
    (leader,) = [op for op in ops if holder.startswith(f"{op.name}_")]
    (standby,) = [op for op in ops if op is not leader]
    return leader, standby


def test_one_replica_acts_and_a_standby_takes_over_after_a_crash(
    sim_cluster: Cluster, api: Api, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        ops = [Operator(sim_cluster, api.namespace, name, tmp_path) for name in ("op-a", "op-b")]
        for op in ops:
            stack.callback(op.stop)
        leader, standby = leader_and_standby(api, ops)
        # Both answer their probes: the standby is healthy and ready, just not leading.
        for op in ops:
            wait_for(
                lambda op=op: op.get("/readyz")[0] == 200,  # type: ignore[misc]
                what=lambda op=op: f"{op.name} ready; log:\n{op.output()}",  # type: ignore[misc]
                retry_on=(OSError,),
            )
            assert op.get("/healthz")[0] == 200
        assert leader.get("/readyz")[1] == "leader\n"
        assert standby.get("/readyz")[1] == "standby\n"
        assert leader.metric("elasticlm_leader") == 1
        assert standby.metric("elasticlm_leader") == 0

        api.create_job("lm")
        wait_for(
            lambda: api.pods("lm") == {"lm-rdzv", "lm-worker-0", "lm-worker-1"},
            what=lambda: f"the leader to create the pods; its log:\n{leader.output()}",
        )
        wait_for(lambda: api.phase("lm") == "Running", what="the job Running")
        # Only the leader ran passes; the standby never started kopf.
        assert leader.metric("elasticlm_reconcile_total") > 0
        assert standby.metric("elasticlm_reconcile_total") == 0
        assert "kopf" not in standby.output()
        transitions = int(api.lease()["leaseTransitions"])

        # Crash the leader: nothing is released, the standby waits for the lease to expire.
        renewed_before = api.lease()["renewTime"]
        killed = time.monotonic()
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        wait_for(
            lambda: api.holder().startswith(f"{standby.name}_"),
            timeout=LEASE_DURATION + RETRY_PERIOD + SLACK + 10,
            what=lambda: f"the standby to take over; its log:\n{standby.output()}",
        )
        takeover = time.monotonic() - killed
        # Never before the lease of the last renewal ran out (that renewal came at most
        # one retry period before the kill), and within one more retry period after.
        assert takeover >= LEASE_DURATION - RETRY_PERIOD - 0.5, (takeover, renewed_before)
        assert takeover <= LEASE_DURATION + RETRY_PERIOD + SLACK, takeover
        assert int(api.lease()["leaseTransitions"]) == transitions + 1
        wait_for(lambda: standby.metric("elasticlm_leader") == 1, what="the new leader's gauge")
        assert "Became the leader" in standby.output()

        # The job goes on under the new leader: a rescale, then training completes.
        api.scale("lm", 3)
        wait_for(
            lambda: api.pods("lm") == {"lm-rdzv", "lm-worker-0", "lm-worker-1", "lm-worker-2"},
            what=lambda: f"the new leader to add worker 2; its log:\n{standby.output()}",
        )
        for index in range(3):
            try:
                api.complete(f"lm-worker-{index}", step=300)
            except kubernetes.client.ApiException as exc:
                # The first completion report can end the job, and its pods go with it.
                if exc.status != 404:
                    raise
        wait_for(
            lambda: api.phase("lm") == "Succeeded",
            what=lambda: f"the job Succeeded; the new leader's log:\n{standby.output()}",
        )


def test_a_graceful_stop_hands_over_at_once(sim_cluster: Cluster, api: Api, tmp_path: Path) -> None:
    with ExitStack() as stack:
        ops = [Operator(sim_cluster, api.namespace, name, tmp_path) for name in ("op-a", "op-b")]
        for op in ops:
            stack.callback(op.stop)
        leader, standby = leader_and_standby(api, ops)
        wait_for(
            lambda: standby.get("/readyz")[0] == 200, what="the standby ready", retry_on=(OSError,)
        )
        api.create_job("lm", replicas=1)
        wait_for(lambda: api.pods("lm") == {"lm-rdzv", "lm-worker-0"}, what="the job's pods")
        wait_for(lambda: api.phase("lm") == "Running", what="the job Running")

        stopped = time.monotonic()
        leader.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: api.holder().startswith(f"{standby.name}_"),
            timeout=LEASE_DURATION + SLACK + 10,
            what=lambda: f"the standby to take over; the leader's log:\n{leader.output()}",
        )
        handover = time.monotonic() - stopped
        # The old leader renews until it releases, so a takeover by expiry could not
        # come before LEASE_DURATION: this one came from the release.
        assert handover < LEASE_DURATION, handover
        assert leader.process.wait(timeout=20) == 0
        assert "Released the lease" in leader.output()

        # The new leader acts on what comes next.
        api.scale("lm", 2)
        wait_for(
            lambda: api.pods("lm") == {"lm-rdzv", "lm-worker-0", "lm-worker-1"},
            what=lambda: f"the new leader to add worker 1; its log:\n{standby.output()}",
        )
        events = api.core.list_namespaced_event(
            api.namespace, field_selector=f"involvedObject.name={LEASE_NAME}"
        ).items
        messages = [e.message for e in events if e.reason == "LeaderElection"]
        assert any(m.endswith("stopped leading") for m in messages), messages
        assert any(
            m.startswith(f"{standby.name}_") and m.endswith("became leader") for m in messages
        ), messages


def test_a_leader_that_loses_its_lease_stops_at_once(
    sim_cluster: Cluster, api: Api, tmp_path: Path
) -> None:
    """Another holder in the Lease (a replica that judged it expired while this one was
    cut off): the leader's next renewal finds out, and it exits with status 1 at once."""
    with ExitStack() as stack:
        (op,) = [Operator(sim_cluster, api.namespace, "op-a", tmp_path)]
        stack.callback(op.stop)
        wait_for(lambda: api.holder().startswith("op-a_"), what="op-a to lead")
        lease = api.custom.get_namespaced_custom_object(
            LEASE.group, LEASE.version, api.namespace, LEASE.plural, LEASE_NAME
        )
        lease["spec"]["holderIdentity"] = "intruder"
        api.custom.replace_namespaced_custom_object(
            LEASE.group, LEASE.version, api.namespace, LEASE.plural, LEASE_NAME, lease
        )
        replaced = time.monotonic()
        assert op.process.wait(timeout=RETRY_PERIOD + SLACK + 10) == 1
        assert time.monotonic() - replaced < RETRY_PERIOD + SLACK
        assert "Lost the lease" in op.output()
        assert "holder=intruder" in op.output()
        assert api.holder() == "intruder"  # nothing released what it no longer held
