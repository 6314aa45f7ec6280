"""LMTrainingJob end to end: the operator, a rendezvous pod and real worker processes on
devcluster, training the tiny model on a synthetic corpus."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmoperator.api.kinds import TRAINING_JOB
from lmoperator.localstack import LocalStack, local_stack
from lmworker.corpus import unigram_entropy_nats, write_corpus
from tests.integration.harness import E2E, kubectl_lm, kubectl_lm_command
from tests.kubeclient import core_api, custom_api
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.skipif(E2E, reason="needs devcluster: pods read local claim dirs"),
    # Whole training runs: the waits inside each test bound it, this only ends a hang.
    pytest.mark.timeout(600),
]

GROUP, VERSION, PLURAL = TRAINING_JOB.group, TRAINING_JOB.version, TRAINING_JOB.plural
DATA_CLAIM, CKPT_CLAIM = "data", "checkpoints"
CORPUS_BYTES = 600_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("training") / "devcluster") as s:
        yield s


class Job:
    """One LMTrainingJob in its own namespace, with helpers to watch it."""

    def __init__(self, stack: LocalStack, name: str = "lm") -> None:
        self.stack = stack
        self.name = name
        self.ns = f"t-{uuid.uuid4().hex[:8]}"
        self.core = core_api(stack.api)
        self.custom = custom_api(stack.api)
        self.core.create_namespace({"metadata": {"name": self.ns}})
        corpus = stack.claim_dir(self.ns, DATA_CLAIM) / "corpus.txt"
        self.corpus = write_corpus(corpus, n_bytes=CORPUS_BYTES, seed=7)
        self.seen_steps: list[tuple[int, int | None]] = []  # (step, lastCheckpoint.step)

    @property
    def checkpoint_dir(self) -> Path:
        return self.stack.claim_dir(self.ns, CKPT_CLAIM) / self.name

    def manifest(self, replicas: int = 2, steps: int = 60, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LMTrainingJob",
            "metadata": {"name": self.name},
            "spec": {
                "replicas": replicas,
                "elastic": {"minReplicas": 1, "maxReplicas": 3},
                "model": {"preset": "tiny"},
                "data": {
                    "claimName": DATA_CLAIM,
                    "path": "corpus.txt",
                    "tokenizer": {"type": "Bytes"},
                },
                "training": {
                    "steps": steps,
                    "globalBatchSize": 12,
                    "microBatchSize": 4,
                    "learningRate": 0.003,
                    "warmupSteps": 10,
                    "seed": 3,
                },
                "checkpoint": {"claimName": CKPT_CLAIM, "path": self.name, "intervalSteps": 10},
                "worker": {"resources": {"requests": {"cpu": "500m"}}},
            },
        }
        body["spec"].update(spec)
        return body

    def create(self, **kw: Any) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, self.manifest(**kw)
        )

    def get(self) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, self.name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def status(self) -> dict[str, Any]:
        obj = self.get()
        status: dict[str, Any] = (obj or {}).get("status") or {}
        if status.get("step") is not None:
            last = (status.get("lastCheckpoint") or {}).get("step")
            if not self.seen_steps or self.seen_steps[-1][0] != status["step"]:
                self.seen_steps.append((int(status["step"]), last))
        return status

    def wait(
        self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float = 150
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> tuple[dict[str, Any]] | None:
            nonlocal last
            last = self.status()
            if done(last):
                return (last,)
            if last.get("phase") == "Failed" and "Failed" not in what:
                raise AssertionError(f"{what}: the job failed; status {last}\n{self.diagnostics()}")
            return None

        (status,) = wait_for(
            reached,
            timeout,
            lambda: f"{what}; last status {last}\n{self.diagnostics()}",
            interval=0.3,
        )
        return status

    def wait_step(self, step: int, timeout: float = 240) -> dict[str, Any]:
        return self.wait(f"step {step}", lambda s: (s.get("step") or 0) >= step, timeout)

    def succeeded(self, timeout: float = 180) -> dict[str, Any]:
        return self.wait("phase Succeeded", lambda s: s.get("phase") == "Succeeded", timeout)

    def scale(self, replicas: int) -> None:
        self.stack_kubectl("scale", f"lmtj/{self.name}", f"--replicas={replicas}")

    def stack_kubectl(self, *args: str) -> str:
        import subprocess

        result = subprocess.run(
            ["kubectl", f"--kubeconfig={self.stack.kubeconfig}", "-n", self.ns, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def pods(self, role: str | None = None) -> list[Any]:
        selector = f"elasticlm.io/job={self.name}"
        if role:
            selector += f",elasticlm.io/role={role}"
        return list(self.core.list_namespaced_pod(self.ns, label_selector=selector).items)

    def condition(self, kind: str) -> dict[str, Any]:
        for c in self.status().get("conditions") or []:
            if c["type"] == kind:
                return dict(c)
        raise AssertionError(f"no {kind} condition in {self.status()}")

    def assert_steps_never_went_back_past_a_checkpoint(self) -> None:
        """The step counter may only fall back to the newest checkpoint (or not at all)."""
        highest = 0
        for step, _ in self.seen_steps:
            if step < highest:
                checkpoints = [c for _, c in self.seen_steps if c is not None and c <= highest]
                assert checkpoints, self.seen_steps
                assert step >= max(checkpoints), self.seen_steps
            highest = max(highest, step)

    def diagnostics(self) -> str:
        lines = [f"pods: {[(p.metadata.name, p.status.phase) for p in self.pods()]}"]
        log = self.stack.operator_log
        if log.exists():
            lines.append("operator log tail:\n" + "\n".join(log.read_text().splitlines()[-30:]))
        for pod_dir in sorted((self.stack.state_dir / "pods").glob(f"{self.ns}_*")):
            for f in sorted((pod_dir / "logs").glob("*.log")):
                tail = "\n".join(f.read_text(errors="replace").splitlines()[-40:])
                lines.append(f"--- {pod_dir.name}/{f.name}\n{tail}")
        return "\n".join(lines)

    def delete_namespace(self) -> None:
        self.core.delete_namespace(self.ns)


@pytest.fixture
def job(stack: LocalStack) -> Iterator[Job]:
    j = Job(stack)
    yield j
    if j.get() is not None:
        j.custom.delete_namespaced_custom_object(GROUP, VERSION, j.ns, PLURAL, j.name)
    j.delete_namespace()


def operator_metrics(stack: LocalStack) -> str:
    url = f"http://127.0.0.1:{stack.operator_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def reconcile_passes(stack: LocalStack, result: str) -> float:
    """The operator's count of finished reconcile passes with `result`, from its metrics
    (once its metrics server answers: it starts with the operator)."""
    text = wait_for(
        lambda: operator_metrics(stack), 30, "the operator's metrics", retry_on=(OSError,)
    )
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "elasticlm_reconcile_total" and sample.labels.get("result") == result
    )


def worker_pid(pod: Any) -> int:
    """devcluster reports the container's process as its containerID."""
    cid = pod.status.container_statuses[0].container_id
    return int(cid.rsplit("://", 1)[1])


def test_two_workers_train_to_completion_and_learn(job: Job) -> None:
    job.create(replicas=2, steps=120)
    status = job.succeeded()
    assert status["step"] == 120
    unigram = job.corpus["unigram_entropy_nats_per_byte"]
    assert status["loss"] < 0.6 * unigram, (status["loss"], unigram)
    assert job.condition("Succeeded")["status"] == "True"
    assert job.condition("Succeeded")["reason"] == "TrainingCompleted"
    # What users see first: the printer columns.
    table = job.stack_kubectl("get", "lmtj", job.name).splitlines()
    assert table[0].split()[:2] == ["NAME", "PHASE"]
    assert table[1].split()[:2] == [job.name, "Succeeded"]
    assert "120" in table[1].split()
    # The final checkpoint and the Hugging Face export lie on the checkpoint claim.
    assert (job.checkpoint_dir / "step-00000120").is_dir()
    assert (job.checkpoint_dir / "export" / "config.json").is_file()
    # The loss is measured in nats per byte: the same unit as the entropy.
    text = (job.stack.claim_dir(job.ns, DATA_CLAIM) / "corpus.txt").read_bytes()
    assert unigram == pytest.approx(unigram_entropy_nats(text))


def test_scale_2_3_1_follows_world_size_and_completes(job: Job, tmp_path: Path) -> None:
    """Scaled by `kubectl scale` and by `kubectl lm scale`, while `kubectl lm logs -f`
    follows every worker, the one that joins included, until the job has finished."""
    # Long enough that both rescales land mid-run: the status shows progress every ~5 s,
    # and on an idle machine 150 steps took ~20 s.
    job.create(replicas=2, steps=300)
    command, env = kubectl_lm_command(job.stack.kubeconfig, job.ns, "logs", "-f", "lmtj/lm")
    with (tmp_path / "follow.log").open("w+") as followed:
        follower = subprocess.Popen(command, stdout=followed, stderr=subprocess.STDOUT, env=env)
        try:
            job.wait(
                "world size 2", lambda s: s.get("worldSize") == 2 and (s.get("step") or 0) >= 5
            )
            job.scale(3)
            job.wait("world size 3", lambda s: s.get("worldSize") == 3)
            workers = {p.metadata.name for p in job.pods("worker")}
            assert workers >= {f"lm-worker-{i}" for i in range(3)}
            at3 = job.status()["step"]
            job.wait_step(at3 + 5)
            scaled = kubectl_lm(job.stack.kubeconfig, job.ns, "scale", "lmtj/lm", "1")
            assert scaled.stdout == "lmtrainingjob.elasticlm.io/lm scaled (3 -> 1)\n"
            job.wait("world size 1", lambda s: s.get("worldSize") == 1)
            job.wait(
                "only worker-0 left",
                lambda s: [p.metadata.name for p in job.pods("worker")] == ["lm-worker-0"],
                timeout=60,
            )
            status = job.succeeded()
            # The follower ends by itself once the job has finished and every log is read.
            assert follower.wait(timeout=30) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        followed.seek(0)
        lines = followed.read().splitlines()
    assert status["step"] == 300
    job.assert_steps_never_went_back_past_a_checkpoint()
    history = [(h["from"], h["to"]) for h in status.get("scalingHistory") or []]
    assert (2, 3) in history
    assert (3, 1) in history
    # Every worker's lines came, the joining rank 2's too, each once and prefixed.
    assert {line.split("]")[0] + "]" for line in lines} == {"[rank 0]", "[rank 1]", "[rank 2]"}
    assert any("rank 2 of 3" in line for line in lines if line.startswith("[rank 2]"))
    assert sum("training complete at step 300" in line for line in lines) >= 1
    # No line twice (a log line starts with its own timestamp, so equal lines are repeats).
    logged = [line for line in lines if re.match(r"\[rank \d\] \d{4}-\d\d-\d\d ", line)]
    assert len(logged) == len(set(logged))
    page = kubectl_lm(job.stack.kubeconfig, job.ns, "describe", "lmtj/lm").stdout
    assert re.search(r"^Phase: +Succeeded$", page, re.MULTILINE), page
    assert re.search(r"^  \S+ +2 +3 +Manual: spec.replicas 2 → 3 ", page, re.MULTILINE)
    assert re.search(r"^  \S+ +3 +1 +Manual: spec.replicas 3 → 1 ", page, re.MULTILINE)


def test_killed_worker_recovers_and_counts_a_restart(job: Job) -> None:
    job.create(replicas=2, steps=120)
    job.wait("training at 2", lambda s: s.get("worldSize") == 2 and (s.get("step") or 0) >= 10)
    victim = next(p for p in job.pods("worker") if p.metadata.name == "lm-worker-1")
    os.kill(worker_pid(victim), signal.SIGKILL)
    job.wait("a restart counted", lambda s: (s.get("restarts") or 0) >= 1, timeout=60)
    job.wait("world size 2 again", lambda s: s.get("worldSize") == 2, timeout=120)
    status = job.succeeded()
    assert status["step"] == 120
    assert status["restarts"] == 1
    job.assert_steps_never_went_back_past_a_checkpoint()


def test_a_frozen_worker_fails_its_liveness_probe_and_is_replaced(job: Job) -> None:
    # A stopped process stands for a frozen interpreter: its /healthz never answers.
    # The template shortens the probe (a minute by default) and the grace period.
    fast = {"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 3}
    template = {
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "worker", "livenessProbe": fast}],
        }
    }
    worker = {"resources": {"requests": {"cpu": "500m"}}, "podTemplate": template}
    job.create(replicas=2, steps=400, worker=worker)
    job.wait("training at 2", lambda s: s.get("worldSize") == 2 and (s.get("step") or 0) >= 10)
    victim = next(p for p in job.pods("worker") if p.metadata.name == "lm-worker-1")
    os.kill(worker_pid(victim), signal.SIGSTOP)
    job.wait("a restart counted", lambda s: (s.get("restarts") or 0) >= 1, timeout=60)

    def replacement_trains() -> bool:
        pods = [p for p in job.pods("worker") if p.metadata.name == "lm-worker-1"]
        return any(
            p.metadata.uid != victim.metadata.uid
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in pods
        )

    wait_for(replacement_trains, 120, "a new lm-worker-1 training (Ready)")
    status = job.status()
    job.wait(
        "training at 2 again",
        lambda s: s.get("worldSize") == 2 and (s.get("step") or 0) > (status.get("step") or 0),
        timeout=60,
    )
    assert job.status()["restarts"] == 1


def test_operator_restart_makes_no_duplicate_pods(job: Job) -> None:
    job.create(replicas=2, steps=100)
    job.wait_step(10)
    before = {p.metadata.name: p.metadata.uid for p in job.pods()}
    job.stack.stop_operator(kill=True)
    step_at_kill = job.status().get("step") or 0
    job.stack.start_operator()
    # Only the restarted operator writes the step from now on, and the pass counter moves
    # once a pass has finished: then it has seen the job's pods and done all it would do.
    wait_for(
        lambda: (
            reconcile_passes(job.stack, "success") >= 1
            and (job.status().get("step") or 0) > step_at_kill
        ),
        60,
        lambda: f"the restarted operator to reconcile the job\n{job.diagnostics()}",
    )
    after = {p.metadata.name: p.metadata.uid for p in job.pods()}
    assert after == before  # the same pods: none recreated, none added
    status = job.succeeded()
    assert status["step"] == 100
    # Whatever is left is one of the original pods, never a re-creation.
    assert {p.metadata.uid for p in job.pods()} <= set(before.values())


def test_invalid_spec_fails_with_the_field_and_creates_nothing(job: Job) -> None:
    template = {
        "spec": {"containers": [{"name": "worker", "securityContext": {"privileged": True}}]}
    }
    invalid_before = reconcile_passes(job.stack, "invalid")
    job.create(worker={"podTemplate": template})
    status = job.wait("phase Failed", lambda s: s.get("phase") == "Failed", timeout=60)
    failed = job.condition("Failed")
    assert failed["reason"] == "Invalid"
    assert "spec.worker.podTemplate" in failed["message"]
    assert "privileged" in failed["message"]
    # The pass that found the spec invalid has finished (its count moved) and made nothing.
    wait_for(
        lambda: reconcile_passes(job.stack, "invalid") > invalid_before,
        30,
        "the operator to finish the pass that failed the job",
    )
    assert job.pods() == []
    assert status.get("replicas", 0) == 0


def test_delete_mid_run_removes_every_child(job: Job) -> None:
    job.create(replicas=2, steps=400)
    job.wait_step(5)
    assert len(job.pods()) == 3  # 2 workers + the rendezvous
    job.custom.delete_namespaced_custom_object(GROUP, VERSION, job.ns, PLURAL, job.name)
    job.wait("job and children gone", lambda s: job.get() is None and not job.pods(), 90)
    services = job.core.list_namespaced_service(job.ns, label_selector="elasticlm.io/job=lm")
    assert services.items == []


def test_suspend_keeps_the_checkpoint_and_resume_continues_from_it(job: Job) -> None:
    job.create(replicas=2, steps=120)
    job.wait_step(25)
    job.custom.patch_namespaced_custom_object(
        GROUP, VERSION, job.ns, PLURAL, job.name, {"spec": {"runPolicy": {"suspend": True}}}
    )
    status = job.wait("Suspended", lambda s: s.get("phase") == "Suspended", timeout=90)
    job.wait("no pods", lambda s: not job.pods(), timeout=90)
    saved = max(int(p.name.split("-")[1]) for p in job.checkpoint_dir.glob("step-*"))
    assert saved >= 25  # the final checkpoint written on SIGTERM
    assert job.condition("Suspended")["status"] == "True"
    job.custom.patch_namespaced_custom_object(
        GROUP, VERSION, job.ns, PLURAL, job.name, {"spec": {"runPolicy": {"suspend": False}}}
    )
    stale = job.status().get("step")  # the last figure read before the pods went away
    job.seen_steps.clear()
    # Fresh figures from the new pods. The rest of the run may take less than one status
    # write (4 s), so it may already be over when they are first seen.
    resumed = job.wait(
        "fresh figures after the resume",
        lambda s: s.get("phase") in ("Running", "Succeeded") and s.get("step") not in (None, stale),
    )
    assert resumed["step"] >= saved
    job.succeeded()
    assert all(step >= saved for step, _ in job.seen_steps if step != stale), job.seen_steps
    # Continued from the checkpoint written on suspend, not from step 0.
    log = job.stack_kubectl("logs", "lm-worker-0")
    restored = re.search(r"restored checkpoint step-(\d+)", log)
    assert restored is not None, log
    assert int(restored.group(1)) >= saved
    assert status["phase"] == "Suspended"


RAW: dict[str, Any] = {"_preload_content": False}


def raw(response: Any) -> dict[str, Any]:
    """The object as the API server sent it (camelCase, no client model)."""
    body: dict[str, Any] = json.loads(response.data)
    return body


def _owner(ref: dict[str, Any]) -> dict[str, Any]:
    return {k: ref.get(k) for k in ("kind", "name", "uid", "controller")}


def _probe_pod(job: Job, name: str, secret: str | None) -> dict[str, Any]:
    """A pod that carries the job's label (so the NetworkPolicy would admit it) and asks
    the rendezvous to let it in, with `secret` mounted (None: no secret at all)."""
    service = job.core.read_namespaced_service(f"{job.name}-rdzv", job.ns)
    command = ["python", "-m", "lmworker.storeauth", f"{service.spec.cluster_ip}:29400"]
    pod: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"elasticlm.io/job": job.name}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "probe", "image": "ghcr.io/elasticlm/worker", "command": command}
            ],
        },
    }
    if secret is not None:
        pod["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": secret}}]
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]
        command += ["--secret-file", "/s/token"]
    return pod


def _probe(job: Job, name: str, secret: str | None) -> tuple[int, str]:
    """(exit code, log) of a probe pod."""
    job.core.create_namespaced_pod(job.ns, _probe_pod(job, name, secret))

    def ended() -> tuple[int] | None:
        pod = job.core.read_namespaced_pod(name, job.ns)
        if pod.status.phase not in ("Succeeded", "Failed"):
            return None
        return (int(pod.status.container_statuses[0].state.terminated.exit_code),)

    (code,) = wait_for(ended, 60, f"probe pod {name} to end\n{job.diagnostics()}", interval=0.3)
    return code, str(job.core.read_namespaced_pod_log(name, job.ns))


def test_rendezvous_secret_and_network_policy(job: Job) -> None:
    """The job's Secret and NetworkPolicy exist, owned by the job; a pod without the
    secret (or with another one) is refused by the store, one with it gets in."""
    job.create(replicas=1, steps=400)
    job.wait_step(3)  # trains with the authentication on
    uid = (job.get() or {})["metadata"]["uid"]
    owner = {"kind": "LMTrainingJob", "name": job.name, "uid": uid, "controller": True}

    secret = raw(job.core.read_namespaced_secret(f"{job.name}-rdzv-auth", job.ns, **RAW))
    assert [_owner(r) for r in secret["metadata"]["ownerReferences"]] == [owner]
    assert secret["type"] == "Opaque"
    assert len(secret["data"]["token"]) >= 40  # 256 random bits, base64 of URL-safe text

    networking = kubernetes.client.NetworkingV1Api(job.stack.api)
    policy = raw(networking.read_namespaced_network_policy(f"{job.name}-pods", job.ns, **RAW))
    assert [_owner(r) for r in policy["metadata"]["ownerReferences"]] == [owner]
    spec = policy["spec"]
    own = {"podSelector": {"matchLabels": {"elasticlm.io/job": job.name}}}
    assert spec["podSelector"] == own["podSelector"]
    assert spec["policyTypes"] == ["Ingress"]
    # This operator runs without peer flags: only the job's own pods, on every port.
    assert spec["ingress"] == [{"from": [own]}]

    code, log = _probe(job, "no-secret", None)
    assert code == 1, log
    assert "refused" in log, log
    job.core.create_namespaced_secret(
        job.ns, {"metadata": {"name": "other"}, "stringData": {"token": "x" * 43}}
    )
    code, log = _probe(job, "other-secret", "other")
    assert code == 1, log
    assert "refused this pod's secret" in log, log
    code, log = _probe(job, "with-secret", f"{job.name}-rdzv-auth")
    assert code == 0, log
    assert "accepted" in log, log
    rdzv_log = "\n".join(
        f.read_text(errors="replace")
        for f in (job.stack.state_dir / "pods").glob(f"{job.ns}_{job.name}-rdzv*/logs/*.log")
    )
    assert rdzv_log.count("Refused a rendezvous connection without the job's secret") >= 2
    assert job.status()["phase"] == "Running"

    # Opting out removes the policy; the secret stays.
    job.custom.patch_namespaced_custom_object(
        GROUP, VERSION, job.ns, PLURAL, job.name, {"spec": {"networkPolicy": {"enabled": False}}}
    )
    wait_for(
        lambda: not networking.list_namespaced_network_policy(job.ns).items,
        30,
        "the NetworkPolicy to go",
        interval=0.3,
    )
    assert job.core.read_namespaced_secret(f"{job.name}-rdzv-auth", job.ns).data


def test_pods_of_two_processes_train_at_pods_times_processes(job: Job) -> None:
    """worker.processesPerPod: 2 pods x 2 processes train at world size 4; scaled to one
    pod, its two processes train on at world size 2 to the end."""
    training = {**job.manifest(steps=120)["spec"]["training"], "globalBatchSize": 24}
    worker = {"resources": {"requests": {"cpu": "1"}}, "processesPerPod": 2}
    job.create(replicas=2, steps=120, training=training, worker=worker)
    job.wait("world size 4", lambda s: s.get("worldSize") == 4 and (s.get("step") or 0) >= 5)
    job.scale(1)
    job.wait("world size 2", lambda s: s.get("worldSize") == 2)
    job.wait(
        "only worker-0 left",
        lambda s: [p.metadata.name for p in job.pods("worker")] == ["lm-worker-0"],
        timeout=60,
    )
    status = job.succeeded()
    assert status["step"] == 120
    assert not status.get("restarts")  # the pod scaled away left cleanly, as one worker
    job.assert_steps_never_went_back_past_a_checkpoint()
