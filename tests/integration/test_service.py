"""LMService end to end on devcluster: a tiny job trained once, then served by the
operator's Deployment behind a Service and driven with the official `openai` client."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import kubernetes
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmoperator.api.kinds import SERVICE, TRAINING_JOB
from lmoperator.localstack import LocalStack, local_stack
from lmworker.corpus import write_corpus
from tests.integration.harness import E2E, kubectl_lm
from tests.kubeclient import core_api, custom_api
from tests.prometheus_standin import PrometheusStandIn
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.skipif(E2E, reason="needs devcluster: pods read local claim dirs"),
    pytest.mark.timeout(600),
]

GROUP, VERSION = SERVICE.group, SERVICE.version
DATA_CLAIM, CKPT_CLAIM = "data", "checkpoints"
JOB = "lm"
STEPS = 40
PROMPT = "the quick "


class Trained:
    """One devcluster with the operator, and a tiny job trained to completion in it."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.ns = f"t-{uuid.uuid4().hex[:8]}"
        self.core = core_api(stack.api)
        self.custom = custom_api(stack.api)
        self.core.create_namespace({"metadata": {"name": self.ns}})
        write_corpus(stack.claim_dir(self.ns, DATA_CLAIM) / "corpus.txt", n_bytes=200_000, seed=5)

    @property
    def export_dir(self) -> Path:
        return self.stack.claim_dir(self.ns, CKPT_CLAIM) / JOB / "export"

    def train(self) -> None:
        job = {
            "apiVersion": TRAINING_JOB.api_version,
            "kind": TRAINING_JOB.kind,
            "metadata": {"name": JOB},
            "spec": {
                "replicas": 1,
                "model": {"preset": "tiny"},
                "data": {
                    "claimName": DATA_CLAIM,
                    "path": "corpus.txt",
                    "tokenizer": {"type": "Bytes"},
                },
                "training": {
                    "steps": STEPS,
                    "globalBatchSize": 8,
                    "microBatchSize": 4,
                    "learningRate": 0.003,
                    "warmupSteps": 5,
                },
                "checkpoint": {"claimName": CKPT_CLAIM, "path": JOB, "intervalSteps": 20},
                "worker": {"resources": {"requests": {"cpu": "1"}}},
            },
        }
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, TRAINING_JOB.plural, job
        )
        self.wait_object(
            TRAINING_JOB.plural, JOB, "Succeeded", lambda s: s.get("phase") == "Succeeded"
        )

    def status(self, plural: str, name: str) -> dict[str, Any]:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return dict(obj.get("status") or {})

    def wait_object(
        self, plural: str, name: str, what: str, done: Any, timeout: float = 240
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> tuple[dict[str, Any]] | None:
            nonlocal last
            last = self.status(plural, name)
            return (last,) if done(last) else None

        (status,) = wait_for(
            reached, timeout, lambda: f"{plural}/{name} {what}; last {last}\n{self.logs()}"
        )
        return status

    def apply_service(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": SERVICE.api_version,
            "kind": SERVICE.kind,
            "metadata": {"name": name},
            "spec": {
                "model": {"fromTrainingJob": {"name": JOB}},
                "precision": "fp32",
                "serving": {"maxBatchSize": 4, "maxNewTokens": 32},
                "worker": {"resources": {"requests": {"cpu": "500m"}}},
                **spec,
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, SERVICE.plural, body)

    def client(self, service: str) -> openai.OpenAI:
        svc = self.core.read_namespaced_service(service, self.ns)
        return openai.OpenAI(
            base_url=f"http://{svc.spec.cluster_ip}:80/v1", api_key="unused", max_retries=0
        )

    def kubectl(self, *args: str) -> str:
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={self.stack.kubeconfig}", "-n", self.ns, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def logs(self) -> str:
        lines = []
        log = self.stack.operator_log
        if log.exists():
            lines.append("operator log tail:\n" + "\n".join(log.read_text().splitlines()[-30:]))
        for pod_dir in sorted((self.stack.state_dir / "pods").glob(f"{self.ns}_*")):
            for f in sorted((pod_dir / "logs").glob("*.log")):
                tail = "\n".join(f.read_text(errors="replace").splitlines()[-20:])
                lines.append(f"--- {pod_dir.name}/{f.name}\n{tail}")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    with local_stack(tmp_path_factory.mktemp("serving") / "devcluster") as stack:
        t = Trained(stack)
        t.train()
        yield t


def offline_greedy(export: Path, prompt: str, tokens: int) -> str:
    """The same model decoding the prompt alone in this process, without the server."""
    import torch

    from lmworker.model import generate
    from lmworker.serve.loading import load_model_dir

    served = load_model_dir(export)
    ids = list(served.tokenizer.encode(prompt, add_special_tokens=True).ids)
    with torch.no_grad():
        out = generate(served.model, torch.tensor([ids]), tokens)
    new = [int(t) for t in out[0, len(ids) :]]
    stops = [i for i, t in enumerate(new) if t in served.stop_token_ids]
    return str(served.tokenizer.decode(new[: stops[0]] if stops else new))


def test_a_trained_job_is_served_through_its_service(trained: Trained) -> None:
    trained.apply_service("chat")
    status = trained.wait_object(
        SERVICE.plural, "chat", "Ready", lambda s: s.get("phase") == "Ready"
    )
    assert status["readyReplicas"] == 1
    assert status["endpoint"] == f"http://chat.{trained.ns}.svc/v1"
    assert "export of the finished job" in status["model"]["checkpoint"]
    client = trained.client("chat")
    whole = client.completions.create(model="chat", prompt=PROMPT, max_tokens=12, temperature=0)
    assert whole.choices[0].finish_reason in ("length", "stop")
    streamed = client.completions.create(
        model="chat", prompt=PROMPT, max_tokens=12, temperature=0, stream=True
    )
    pieces = [chunk.choices[0].text for chunk in streamed if chunk.choices]
    assert "".join(pieces) == whole.choices[0].text
    assert whole.choices[0].text == offline_greedy(trained.export_dir, PROMPT, 12)
    # What users see first: the printer columns.
    table = trained.kubectl("get", "lms", "chat").splitlines()
    assert table[1].split()[:2] == ["chat", "Ready"]


def test_kubectl_scale_adds_and_removes_servers(trained: Trained) -> None:
    trained.apply_service("scaled")
    trained.wait_object(SERVICE.plural, "scaled", "Ready", lambda s: s.get("phase") == "Ready")
    trained.kubectl("scale", "lms/scaled", "--replicas=2")
    trained.wait_object(SERVICE.plural, "scaled", "2 ready", lambda s: s.get("readyReplicas") == 2)
    deployment = kubernetes.client.AppsV1Api(trained.stack.api).read_namespaced_deployment(
        "scaled-server", trained.ns
    )
    assert deployment.spec.replicas == 2
    trained.kubectl("scale", "lms/scaled", "--replicas=1")
    trained.wait_object(
        SERVICE.plural,
        "scaled",
        "back to 1",
        lambda s: s.get("replicas") == 1 and s.get("phase") == "Ready",
    )


def test_a_missing_job_leaves_the_service_pending_and_says_why(trained: Trained) -> None:
    trained.apply_service("orphan", model={"fromTrainingJob": {"name": "nope"}})
    status = trained.wait_object(
        SERVICE.plural, "orphan", "Pending", lambda s: s.get("phase") == "Pending"
    )
    loaded = next(c for c in status["conditions"] if c["type"] == "ModelLoaded")
    assert loaded["reason"] == "TrainingJobNotFound"
    assert "LMTrainingJob nope was not found" in loaded["message"]


def test_kubectl_lm_gets_scales_describes_and_reads_logs(trained: Trained) -> None:
    """The plugin as a user runs it: `kubectl lm ...` with kubectl finding `kubectl-lm`
    on the PATH, against the trained job and a service of its own."""

    def lm(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return kubectl_lm(trained.stack.kubeconfig, trained.ns, *args, expect=expect)

    trained.apply_service("plugin")
    trained.wait_object(SERVICE.plural, "plugin", "Ready", lambda s: s.get("phase") == "Ready")
    listing = lm("get").stdout.splitlines()
    job_row = next(line.split() for line in listing if line.startswith(f"lmtj/{JOB} "))
    assert job_row[:2] == [f"lmtj/{JOB}", "Succeeded"]
    assert f"{STEPS}/{STEPS}" in job_row
    service_row = next(line.split() for line in listing if line.startswith("lms/plugin "))
    assert service_row[:4] == ["lms/plugin", "Ready", "1/1", f"lmtj/{JOB}"]
    assert f"http://plugin.{trained.ns}.svc/v1" in service_row
    assert lm("get", "lms", "plugin", "-o", "name").stdout == "lmservice.elasticlm.io/plugin\n"

    assert (
        lm("scale", "lms/plugin", "2").stdout == "lmservice.elasticlm.io/plugin scaled (1 -> 2)\n"
    )
    trained.wait_object(SERVICE.plural, "plugin", "2 ready", lambda s: s.get("readyReplicas") == 2)
    logs = lm("logs", "lms/plugin").stdout.splitlines()
    prefixes = {line.split("] ")[0] + "]" for line in logs}
    assert len(prefixes) == 2, logs
    assert all(p.startswith("[plugin-server-") for p in prefixes)
    assert sum("Model loaded" in line for line in logs) == 2

    page = lm("describe", "lms/plugin").stdout
    assert "Replicas:    2 desired, 2 exist, 2 ready, 2 updated" in page
    assert re.search(r"^  Ready +True +Serving ", page, re.MULTILINE)
    assert re.search(r"^  Normal +Scaled .* Scaled the servers from 1 to 2$", page, re.MULTILINE)

    job_logs = lm("logs", f"lmtj/{JOB}").stdout.splitlines()
    assert job_logs
    assert all(line.startswith("[rank 0] ") for line in job_logs)
    assert any(f"training complete at step {STEPS}" in line for line in job_logs)
    job_page = lm("describe", f"lmtj/{JOB}").stdout
    assert re.search(r"^  Succeeded +True +TrainingCompleted ", job_page, re.MULTILINE)

    missing = lm("describe", "lmtj/nope", expect=1)
    assert missing.stderr.startswith(
        f'error: lmtrainingjobs.elasticlm.io "nope" not found in namespace "{trained.ns}"'
    )
    unknown = lm("scale", "deploy/x", "2", expect=2)
    assert unknown.stderr.startswith('error: unknown kind "deploy"')
    assert lm("get", "lmtj", "--context", "nowhere", expect=1).stderr.startswith(
        'error: context "nowhere" is not in the kubeconfig'
    )


class Load:
    """Clients looping completions until stopped, each request on a new connection (the
    Service balances connections), counting what succeeded and what failed."""

    def __init__(
        self, base_url: str, model: str, clients: int, max_tokens: int, ignore_eos: bool
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        # The client's own retries (2, on 429/503 and connection errors) are what users
        # run with; a request fails when it fails after them.
        http = openai.DefaultHttpx2Client(
            limits=httpx2.Limits(max_keepalive_connections=0), timeout=60
        )
        client = openai.OpenAI(base_url=self.base_url, api_key="unused", http_client=http)
        extra = {"ignore_eos": True} if self.ignore_eos else {}
        while not self.stop.is_set():
            try:
                client.completions.create(
                    model=self.model, prompt=PROMPT, max_tokens=self.max_tokens, extra_body=extra
                )
            except openai.OpenAIError as exc:
                with self.lock:
                    self.failures.append(repr(exc))
            else:
                with self.lock:
                    self.ok += 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


def served_requests(pod_ip: str) -> float:
    """A server pod's successful /v1 requests, from its own /metrics."""
    with urllib.request.urlopen(f"http://{pod_ip}:8000/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "elasticlm_serve_requests_total" and s.labels.get("code") == "200"
    )


def live_pods(trained: Trained, service: str) -> dict[str, str]:
    pods = trained.core.list_namespaced_pod(
        trained.ns, label_selector=f"elasticlm.io/service={service}"
    ).items
    return {
        p.metadata.name: p.status.pod_ip
        for p in pods
        if p.metadata.deletion_timestamp is None and p.status.pod_ip
    }


def test_scale_1_3_1_under_load_drops_nothing_and_keeps_the_busiest(trained: Trained) -> None:
    trained.apply_service("load", serving={"maxBatchSize": 4, "maxQueue": 64})
    trained.wait_object(SERVICE.plural, "load", "Ready", lambda s: s.get("phase") == "Ready")
    svc = trained.core.read_namespaced_service("load", trained.ns)
    load = Load(
        f"http://{svc.spec.cluster_ip}:80/v1",
        svc.metadata.name,
        clients=4,
        max_tokens=8,
        ignore_eos=False,
    )
    hot: Load | None = None
    try:
        trained.kubectl("scale", "lms/load", "--replicas=3")
        trained.wait_object(
            SERVICE.plural, "load", "3 ready", lambda s: s.get("readyReplicas") == 3
        )
        pods = live_pods(trained, "load")
        assert len(pods) == 3
        # Every pod serves: the Service spreads new connections over the ready pods.
        wait_for(
            lambda: all(served_requests(ip) > 0 for ip in pods.values()),
            60,
            lambda: f"every pod to serve: {[served_requests(ip) for ip in pods.values()]}",
        )
        # One pod gets long requests of its own, so it is the busiest when the count drops.
        busiest, busy_ip = sorted(pods.items())[1]
        hot = Load(f"http://{busy_ip}:8000/v1", "load", clients=3, max_tokens=100, ignore_eos=True)
        wait_for(lambda: hot.ok > 0, 60, "the busy pod to answer")
        trained.kubectl("scale", "lms/load", "--replicas=1")
        trained.wait_object(
            SERVICE.plural,
            "load",
            "one replica left",
            lambda s: s.get("replicas") == 1 and s.get("readyReplicas") == 1,
        )
        assert list(live_pods(trained, "load")) == [busiest]
    finally:
        load.finish()
        if hot is not None:
            hot.finish()
    assert load.ok > 0
    assert load.failures == []
    assert hot is not None
    assert hot.failures == []


def patch_service(trained: Trained, name: str, spec: dict[str, Any]) -> None:
    trained.custom.patch_namespaced_custom_object(
        GROUP, VERSION, trained.ns, SERVICE.plural, name, {"spec": spec}
    )


def test_rolling_update_under_load_drops_nothing(trained: Trained) -> None:
    trained.apply_service("roll", replicas=2)
    trained.wait_object(SERVICE.plural, "roll", "Ready", lambda s: s.get("phase") == "Ready")
    before = set(live_pods(trained, "roll"))
    svc = trained.core.read_namespaced_service("roll", trained.ns)
    load = Load(
        f"http://{svc.spec.cluster_ip}:80/v1",
        svc.metadata.name,
        clients=4,
        max_tokens=8,
        ignore_eos=False,
    )
    try:
        wait_for(lambda: load.ok > 10, 60, lambda: f"load to flow; failures {load.failures[:3]}")
        patch_service(trained, "roll", {"serving": {"maxBatchSize": 8, "maxNewTokens": 32}})
        apps = kubernetes.client.AppsV1Api(trained.stack.api)

        def rolled() -> bool:
            d: Any = apps.read_namespaced_deployment("roll-server", trained.ns)
            pods = set(live_pods(trained, "roll"))
            return bool(
                d.status.updated_replicas == 2
                and d.status.ready_replicas == 2
                and (d.status.replicas or 0) == 2
                and not pods & before
            )

        wait_for(rolled, 180, lambda: f"the rollout; pods {live_pods(trained, 'roll')}")
        served = load.ok
        wait_for(lambda: load.ok > served + 5, 60, "the new pods to serve")
    finally:
        load.finish()
    assert load.failures == []
    status = trained.wait_object(
        SERVICE.plural, "roll", "Ready again", lambda s: s.get("phase") == "Ready"
    )
    assert status["updatedReplicas"] == 2
    revision = trained.kubectl("rollout", "history", "deployment/roll-server")
    assert "2" in revision.split()


def test_smollm2_chats_and_a_refused_compression_stalls_its_rollout(
    trained: Trained, smollm2_dir: Path
) -> None:
    """A real pretrained model from a volume, as users serve any HF Llama directory."""
    models = trained.stack.claim_dir(trained.ns, "models")
    models.mkdir(parents=True, exist_ok=True)
    (models / "smollm2").symlink_to(smollm2_dir, target_is_directory=True)
    trained.apply_service(
        "smol",
        model={"hf": {"claimName": "models", "path": "smollm2"}},
        serving={"maxBatchSize": 4, "maxNewTokens": 64},
        worker={"resources": {"requests": {"cpu": "1"}}},
    )
    trained.wait_object(SERVICE.plural, "smol", "Ready", lambda s: s.get("phase") == "Ready")
    client = trained.client("smol")
    question: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(
        model="smol",
        messages=question,
        max_tokens=24,
        temperature=0,
    )
    assert "Paris" in (answer.choices[0].message.content or "")
    chunks = list(
        client.chat.completions.create(
            model="smol",
            messages=question,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finished = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finished[-1] in ("stop", "length")
    assert chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content

    # Zeroing 90% of a real model's weights cannot stay within 5% of its perplexity: the
    # new pod refuses to become ready, the old one keeps serving, the status says why.
    (old,) = live_pods(trained, "smol")
    pruning = {"amount": 0.9, "method": "Magnitude"}
    patch_service(trained, "smol", {"compression": {"pruning": pruning}})

    def stalled(status: dict[str, Any]) -> bool:
        return any(
            c["type"] == "Degraded" and c["reason"] == "RolloutStalled"
            for c in status.get("conditions") or []
        )

    status = trained.wait_object(SERVICE.plural, "smol", "the stalled rollout", stalled)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "perplexity" in degraded["message"]
    assert "1 older pod(s) keep serving" in degraded["message"]
    assert status["phase"] == "Degraded"
    assert old in live_pods(trained, "smol")
    again = client.chat.completions.create(
        model="smol",
        messages=question,
        max_tokens=24,
        temperature=0,
    )
    assert again.choices[0].message.content == answer.choices[0].message.content


def raw_post(host: str, path: str, payload: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """One POST through the Service, whatever the answer; (status, body)."""
    req = urllib.request.Request(f"http://{host}:80{path}", payload, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_auth_bad_input_and_overload_through_the_service(trained: Trained) -> None:
    """The token comes from a Secret through the pod's volume; every refusal reaches the
    client through the Service as an OpenAI error object, and the server keeps serving."""
    token = uuid.uuid4().hex
    trained.core.create_namespaced_secret(
        trained.ns, {"metadata": {"name": "api-token"}, "stringData": {"token": token}}
    )
    trained.apply_service(
        "guarded",
        serving={
            "maxBatchSize": 1,
            "maxQueue": 1,
            "maxNewTokens": 96,
            "authSecretRef": {"name": "api-token", "key": "token"},
        },
    )
    trained.wait_object(SERVICE.plural, "guarded", "Ready", lambda s: s.get("phase") == "Ready")
    host = trained.core.read_namespaced_service("guarded", trained.ns).spec.cluster_ip
    base_url = f"http://{host}:80/v1"

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["guarded"]

    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    refusals = [
        (b'{"prompt": "x",', 400, "not valid JSON"),
        (b'{"prompt": "x", "max_tokens": 97}', 400, "max_tokens"),
        (b'{"prompt": "x", "model": "other"}', 404, "other"),
        (b'{"prompt": "' + b"x" * (1 << 20) + b'"}', 413, "bytes"),
    ]
    for payload, code, words in refusals:
        status, raw = raw_post(host, "/v1/completions", payload, auth)
        assert status == code, raw
        assert words in json.loads(raw)["error"]["message"]

    # A body that never finishes arriving is timed out, not waited on forever.
    with socket.create_connection((host, 80), timeout=30) as slow:
        slow.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b'\r\nContent-Length: 100\r\n\r\n{"prompt"'
        )
        assert slow.recv(65536).decode().startswith("HTTP/1.1 408")

    # One slot and one queue place: a burst gets 429s with Retry-After, nothing else.
    def one() -> tuple[int, str | None]:
        plain = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
        try:
            plain.completions.create(
                model="guarded", prompt=PROMPT, max_tokens=96, extra_body={"ignore_eos": True}
            )
        except openai.RateLimitError as exc:
            return 429, exc.response.headers.get("Retry-After")
        return 200, None

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: one(), range(12)))
    codes = sorted(code for code, _ in answers)
    assert 200 in codes, codes
    assert 429 in codes, codes
    assert all(retry == "1" for code, retry in answers if code == 429)

    after = client.completions.create(model="guarded", prompt=PROMPT, max_tokens=4)
    assert after.choices[0].text is not None


def service_replicas(trained: Trained, name: str) -> int:
    obj = trained.custom.get_namespaced_custom_object(
        GROUP, VERSION, trained.ns, SERVICE.plural, name
    )
    return int(obj["spec"]["replicas"])


def history_of(trained: Trained, name: str) -> list[dict[str, Any]]:
    return list(trained.status(SERVICE.plural, name).get("scalingHistory") or [])


def test_autoscaling_follows_load_up_from_one_and_back_down(trained: Trained) -> None:
    """Short windows: 4 clients against a target of 1 in-flight request per replica scale
    the service up from 1 (to its max, 3), and it returns to 1 once they stop, each
    decision in status.scalingHistory with its reason and an Autoscaled Event."""
    trained.apply_service(
        "auto",
        serving={"maxBatchSize": 4, "maxQueue": 64, "maxNewTokens": 64},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [{"type": "InFlightRequests", "target": 1}],
            "stableWindowSeconds": 6,
            "panicWindowSeconds": 2,
            "scaleDown": {"stabilizationSeconds": 0},
        },
    )

    def scaling_active(s: dict[str, Any]) -> bool:
        return any(
            c["type"] == "ScalingActive" and c["status"] == "True"
            for c in s.get("conditions") or []
        )

    status = trained.wait_object(
        SERVICE.plural,
        "auto",
        "Ready and ScalingActive",
        lambda s: s.get("phase") == "Ready" and scaling_active(s),
    )
    active = next(c for c in status["conditions"] if c["type"] == "ScalingActive")
    assert active["reason"] == "MetricsAvailable"
    assert service_replicas(trained, "auto") == 1
    svc = trained.core.read_namespaced_service("auto", trained.ns)
    load = Load(
        f"http://{svc.spec.cluster_ip}:80/v1", "auto", clients=4, max_tokens=48, ignore_eos=True
    )
    try:
        wait_for(
            lambda: service_replicas(trained, "auto") >= 2,
            45,
            lambda: f"a scale-up; history {history_of(trained, 'auto')}",
        )
    finally:
        load.finish()
    assert load.failures == []
    wait_for(
        lambda: service_replicas(trained, "auto") == 1,
        60,
        lambda: f"the scale-down; history {history_of(trained, 'auto')}",
    )
    history = history_of(trained, "auto")
    ups = [d for d in history if d["to"] > d["from"]]
    downs = [d for d in history if d["to"] < d["from"]]
    assert ups, history
    assert ups[0]["from"] == 1
    assert re.search(r"\((MetricAboveTarget|PanicScaleUp|AboveMaximum)\)", ups[0]["reason"])
    assert ups[0]["metrics"]["InFlightRequests.target"] == 1.0
    assert downs, history
    assert downs[-1]["to"] == 1
    assert "InFlightRequests" in downs[-1]["reason"]
    events = trained.core.list_namespaced_event(
        trained.ns, field_selector="involvedObject.name=auto"
    ).items
    scaled = [e.message for e in events if e.reason == "Autoscaled"]
    assert any(m.startswith("Scaling from 1 to") for m in scaled), scaled
    apps = kubernetes.client.AppsV1Api(trained.stack.api)
    wait_for(
        lambda: apps.read_namespaced_deployment("auto-server", trained.ns).spec.replicas == 1,
        10,
        "the Deployment to follow spec.replicas",
    )
    # The load history, in a ConfigMap the service owns, written as minutes close.
    cm = wait_for(
        lambda: next(
            iter(
                trained.core.list_namespaced_config_map(
                    trained.ns, label_selector="elasticlm.io/autoscaler-history-of=auto"
                ).items
            ),
            None,
        ),
        75,
        "the history ConfigMap",
    )
    assert cm.metadata.name == "auto-autoscaler-history"
    (owner,) = cm.metadata.owner_references
    assert (owner.kind, owner.name) == ("LMService", "auto")
    saved = json.loads(cm.data["history.json"])
    assert saved["bucketSeconds"] == 60
    assert "InFlightRequests" in saved["load"]
    # Owned by the service: garbage collection removes it with the service.
    trained.custom.delete_namespaced_custom_object(
        GROUP, VERSION, trained.ns, SERVICE.plural, "auto"
    )

    def history_gone() -> bool:
        try:
            trained.core.read_namespaced_config_map("auto-autoscaler-history", trained.ns)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(history_gone, 30, "the history ConfigMap to go with its LMService")


def test_autoscaling_from_prometheus_scales_up_and_holds_on_an_empty_result(
    trained: Trained,
) -> None:
    """Source Prometheus against a stand-in speaking /api/v1/query: high load scales the
    service up; an empty result then holds the count (never read as zero load), with
    ScalingActive=False saying why and a MetricUnavailable Event."""
    with PrometheusStandIn() as prometheus:
        prometheus.vector("elasticlm_test_load", ({}, 6.0))
        trained.apply_service(
            "promauto",
            autoscaling={
                "minReplicas": 1,
                "maxReplicas": 2,
                "metrics": [
                    {"type": "InFlightRequests", "target": 1, "query": "elasticlm_test_load"}
                ],
                "stableWindowSeconds": 6,
                "panicWindowSeconds": 2,
                "scaleDown": {"stabilizationSeconds": 0},
                "source": "Prometheus",
                "prometheus": {"url": prometheus.url},
            },
        )
        wait_for(
            lambda: service_replicas(trained, "promauto") == 2,
            120,
            lambda: f"a scale-up; history {history_of(trained, 'promauto')}",
        )
        (up,) = [d for d in history_of(trained, "promauto") if d["to"] > d["from"]]
        assert up["from"] == 1
        assert "InFlightRequests 6 in total" in up["reason"], up
        assert "elasticlm_test_load" in prometheus.queries

        prometheus.vector("elasticlm_test_load")  # an empty result from now on

        def holding(s: dict[str, Any]) -> bool:
            return any(
                c["type"] == "ScalingActive"
                and c["status"] == "False"
                and c["reason"] == "NoMetrics"
                for c in s.get("conditions") or []
            )

        status = trained.wait_object(SERVICE.plural, "promauto", "to hold on no data", holding)
        active = next(c for c in status["conditions"] if c["type"] == "ScalingActive")
        assert "returned an empty result" in active["message"], active
        assert "elasticlm_test_load" in active["message"]
        # Held at its size: the stand-in's empty answer is no load to scale down on.
        assert service_replicas(trained, "promauto") == 2
        assert not [d for d in history_of(trained, "promauto") if d["to"] < d["from"]]
        events = trained.core.list_namespaced_event(
            trained.ns, field_selector="involvedObject.name=promauto"
        ).items
        unavailable = [e.message for e in events if e.reason == "MetricUnavailable"]
        assert any(m.startswith("Empty: InFlightRequests") for m in unavailable), unavailable
        trained.custom.delete_namespaced_custom_object(
            GROUP, VERSION, trained.ns, SERVICE.plural, "promauto"
        )
