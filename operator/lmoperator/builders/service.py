"""Manifests of an LMService's children: the server Deployment, its Service and its PDB.

Pure functions of the typed service and of where its model lies (`ModelSource`, which
reconcile/service.py resolves, e.g. from an LMTrainingJob's status): no API calls, no
clock. Names are deterministic: the Service has the LMService's own name (so the
in-cluster URL is `http://<name>.<namespace>.svc:<port>/v1`), the Deployment and the
PodDisruptionBudget are `<name>-server`.

The pods run `python -m lmworker.serve` (runtime Builtin) or vLLM's OpenAI server
(runtime VLLM, for GPU nodes), with a startup probe long enough for a model to load, a
readiness probe that the server fails while it drains, and a preStop pause so that the
endpoints drop a pod before it stops accepting requests.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lmoperator
from lmoperator.api import kinds
from lmoperator.api.service import LMService, Quantization, Runtime, ServingPrecision
from lmoperator.builders import pods
from lmoperator.builders.merge import merge_pod
from lmoperator.builders.pods import ROLE_LABEL, InvalidPodError
from lmoperator.builders.trainingjob import cpu_threads
from lmworker.config import POD_IP_ENV, TERMINATION_LOG, TERMINATION_LOG_ENV, THREADS_ENV

DEFAULT_SERVER_IMAGE = f"ghcr.io/elasticlm/worker:{lmoperator.__version__}"

SERVICE_LABEL = "elasticlm.io/service"
ROLE_SERVER = "server"
SERVER_CONTAINER = "server"
# Where the model's claim is mounted (read-only) and the auth token's Secret key.
MODEL_MOUNT = "/model"
AUTH_MOUNT = "/var/run/elasticlm/auth"
AUTH_TOKEN_FILE = "token"
TMP_MOUNT = "/tmp"
# The Deployment records the model source it serves (reconcile/service.py reads it).
MODEL_SOURCE_ANNOTATION = "elasticlm.io/model-source"
# Kubernetes' own: the ReplicaSet controller removes the pods with the lowest cost first.
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"

# Loading (and compressing, and measuring perplexity) may take minutes: the startup
# probe allows 10 minutes before the kubelet may restart the container, and liveness only
# starts counting after it. The readiness probe goes false as soon as the server drains.
STARTUP_PERIOD_SECONDS = 2
STARTUP_FAILURES = 300
# After the pod is marked for deletion, it keeps serving while the endpoint controllers
# and load balancers drop it; only then does SIGTERM start the server's drain.
PRESTOP_SECONDS = 5
# The drain itself: in-flight requests finish within this (then SIGKILL).
DRAIN_SECONDS = 30
GRACE_SECONDS = PRESTOP_SECONDS + DRAIN_SECONDS + 5
SERVICE_PORT = 80

RESERVED_ENV = frozenset({POD_IP_ENV, "VLLM_API_KEY"})
TEMPLATE_PATH = "spec.worker.podTemplate"
SERVER_POD_RULES = pods.PodRules(
    container=SERVER_CONTAINER,
    template_path=TEMPLATE_PATH,
    reserved_env=RESERVED_ENV,
    restart_policy="Always",
    restart_policy_hint="a Deployment's pods always restart",
)

# vLLM's --dtype names.
_VLLM_DTYPES = {
    ServingPrecision.AUTO: "auto",
    ServingPrecision.FP32: "float32",
    ServingPrecision.BF16: "bfloat16",
    ServingPrecision.FP16: "float16",
}


@dataclass(frozen=True)
class ModelSource:
    """Where the servers load the model from.

    `format` is "hf" (a Hugging Face Llama directory: config.json, safetensors,
    tokenizer) or "checkpoint" (an LMTrainingJob's checkpoint directory; `step` None is
    the newest complete one when the pod starts). `path` is inside the claim when
    `claim` is set, else inside the container.
    """

    format: str
    path: str
    claim: str | None = None
    step: int | None = None
    origin: str = ""  # for people: e.g. "LMTrainingJob tiny-lm, export of the finished job"

    def container_path(self) -> str:
        return posixpath.join(MODEL_MOUNT, self.path) if self.claim else self.path

    def to_annotation(self) -> str:
        return json.dumps(
            {"format": self.format, "path": self.path, "claim": self.claim, "step": self.step},
            sort_keys=True,
        )


# --------------------------------------------------------------------------------------
# Names and labels


def _name(service: LMService) -> str:
    if not service.metadata.name:
        raise ValueError("the service has no metadata.name")
    return service.metadata.name


def deployment_name(service: str) -> str:
    return f"{service}-server"


def pdb_name(service: str) -> str:
    return f"{service}-server"


def server_labels(service: str) -> dict[str, str]:
    return {SERVICE_LABEL: service, ROLE_LABEL: ROLE_SERVER}


def server_selector(service: str) -> str:
    """The label selector of the server pods (status.selector, for the scale API)."""
    return f"{SERVICE_LABEL}={service},{ROLE_LABEL}={ROLE_SERVER}"


def endpoint(service: str, namespace: str, port: int = SERVICE_PORT) -> str:
    host = f"{service}.{namespace}.svc"
    return f"http://{host}/v1" if port == 80 else f"http://{host}:{port}/v1"


def _metadata(service: LMService, uid: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return pods.child_metadata(
        kinds.SERVICE, _name(service), uid, service.metadata.namespace, name, labels
    )


# --------------------------------------------------------------------------------------
# The server container


def served_model_name(service: LMService) -> str:
    """The model name clients put in requests: the LMService's name."""
    return _name(service)


def builtin_command(service: LMService, source: ModelSource) -> list[str]:
    """`python -m lmworker.serve` with every setting as its own argument (never a shell
    string: nothing a user writes is ever parsed by a shell)."""
    spec = service.spec
    serving = spec.serving
    command = ["python", "-m", "lmworker.serve"]
    if source.format == "hf":
        command += ["--model-dir", source.container_path()]
    else:
        command += ["--checkpoint", source.container_path()]
        if source.step is not None:
            command += ["--step", str(source.step)]
    command += [
        "--served-model-name",
        served_model_name(service),
        "--host",
        f"$({POD_IP_ENV})",
        "--port",
        str(serving.port),
        "--max-batch-size",
        str(serving.max_batch_size),
        "--max-batch-delay-ms",
        str(serving.max_batch_delay_ms),
        "--max-queue",
        str(serving.max_queue),
        "--max-new-tokens",
        str(serving.max_new_tokens),
        "--precision",
        spec.precision.value,
        "--drain-seconds",
        str(DRAIN_SECONDS),
    ]
    compression = spec.compression
    if compression is not None:
        command += [
            "--quantization",
            compression.quantization.value,
            "--max-perplexity-increase",
            repr(compression.max_perplexity_increase),
        ]
        if compression.pruning is not None:
            command += [
                "--pruning-amount",
                repr(compression.pruning.amount),
                "--pruning-method",
                compression.pruning.method.value,
            ]
    if serving.auth_secret_ref is not None:
        command += ["--auth-token-file", posixpath.join(AUTH_MOUNT, AUTH_TOKEN_FILE)]
    return command


def vllm_command(service: LMService, source: ModelSource) -> list[str]:
    """vLLM's OpenAI server with the same model path, port and limits.

    maxQueue and maxBatchDelayMs have no vLLM counterpart; the token comes from the
    VLLM_API_KEY environment variable (from the Secret), never from an argument.
    """
    serving = service.spec.serving
    return [
        "python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        source.container_path(),
        "--served-model-name",
        served_model_name(service),
        "--host",
        "0.0.0.0",
        "--port",
        str(serving.port),
        "--max-num-seqs",
        str(serving.max_batch_size),
        "--dtype",
        _VLLM_DTYPES[service.spec.precision],
        "--disable-log-requests",
    ]


def runtime_problems(service: LMService, source: ModelSource | None) -> list[str]:
    """Settings the chosen runtime cannot honour (empty for Builtin)."""
    spec = service.spec
    if spec.runtime != Runtime.VLLM:
        return []
    problems = []
    compression = spec.compression
    if compression is not None and (
        compression.quantization != Quantization.NONE or compression.pruning is not None
    ):
        problems.append(
            "spec.compression: runtime VLLM serves the model as it is (vLLM loads "
            "pre-quantized checkpoints); remove spec.compression or use runtime Builtin"
        )
    if source is not None and source.format != "hf":
        problems.append(
            "spec.model: runtime VLLM needs a Hugging Face directory (model.hf, or a "
            "finished LMTrainingJob's export), not a training checkpoint"
        )
    return problems


def _probes(service: LMService) -> dict[str, Any]:
    port = service.spec.serving.port
    vllm = service.spec.runtime == Runtime.VLLM
    health = "/health" if vllm else "/healthz"
    ready = "/health" if vllm else "/readyz"
    return {
        "startupProbe": {
            "httpGet": {"path": health, "port": port},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": STARTUP_FAILURES,
        },
        "livenessProbe": {
            "httpGet": {"path": health, "port": port},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": ready, "port": port},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    }


def server_pod_template(service: LMService, uid: str, source: ModelSource) -> dict[str, Any]:
    """The Deployment's pod template, with spec.worker.podTemplate merged in and checked.

    Raises InvalidPodError when the merged pod is not allowed.
    """
    spec = service.spec
    name = _name(service)
    vllm = spec.runtime == Runtime.VLLM
    env: list[dict[str, Any]] = [
        {"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "PROMETHEUS_DISABLE_CREATED_SERIES", "value": "True"},
        {"name": "TMPDIR", "value": TMP_MOUNT},
        {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
    ]
    threads = cpu_threads(spec.worker.resources)
    if threads is not None and all(e.name != THREADS_ENV for e in spec.worker.env or []):
        env.append({"name": THREADS_ENV, "value": str(threads)})
    auth = spec.serving.auth_secret_ref
    if vllm and auth is not None:
        env.append(
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": auth.name, "key": auth.key}},
            }
        )
    env += [
        e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in spec.worker.env or []
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_MOUNT}]
    if source.claim:
        # The builtin server writes one small file beside the model: the uncompressed
        # model's held-out perplexity, measured once per model instead of at every pod
        # start (lmworker.perplexity). vLLM only reads.
        claim: dict[str, Any] = {"claimName": source.claim}
        mount: dict[str, Any] = {"name": "model", "mountPath": MODEL_MOUNT}
        if vllm:
            claim["readOnly"] = mount["readOnly"] = True
        volumes.append({"name": "model", "persistentVolumeClaim": claim})
        mounts.append(mount)
    if auth is not None and not vllm:
        volumes.append(
            {
                "name": "auth",
                "secret": {
                    "secretName": auth.name,
                    "items": [{"key": auth.key, "path": AUTH_TOKEN_FILE}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "command": vllm_command(service, source) if vllm else builtin_command(service, source),
        "env": env,
        "ports": [{"name": "http", "containerPort": spec.serving.port}],
        **_probes(service),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": pods.container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pods.set_image(container, spec.worker, DEFAULT_SERVER_IMAGE)
    if spec.worker.resources is not None:
        resources = spec.worker.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
        if resources:
            container["resources"] = resources
    pod: dict[str, Any] = {
        "metadata": {"labels": server_labels(name)},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            "securityContext": pods.pod_security(),
            "containers": [container],
            "volumes": volumes,
        },
    }
    pods.apply_scheduling(pod, spec.worker, pods.Scheduling())
    template = spec.worker.pod_template
    merged = merge_pod(pod, template) if template else pod
    problems = list(pods.pod_problems(pod, merged, template or {}, SERVER_POD_RULES))
    problems += [
        f"spec.worker.env[{i}].name: {e.name} is set by the operator; remove it"
        for i, e in enumerate(spec.worker.env or [])
        if e.name in RESERVED_ENV
    ]
    if problems:
        raise InvalidPodError(problems)
    return merged


def template_hash(template: dict[str, Any]) -> str:
    """A short digest of a pod template: the Deployment is patched when it changes."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


TEMPLATE_HASH_ANNOTATION = "elasticlm.io/template-hash"


def server_deployment(
    service: LMService, uid: str, source: ModelSource, replicas: int
) -> dict[str, Any]:
    """The Deployment of the server pods: rolling updates one extra pod at a time, never
    below the desired count of ready pods (maxSurge 1, maxUnavailable 0)."""
    name = _name(service)
    template = server_pod_template(service, uid, source)
    meta = _metadata(service, uid, deployment_name(name), server_labels(name))
    meta["annotations"] = {
        MODEL_SOURCE_ANNOTATION: source.to_annotation(),
        TEMPLATE_HASH_ANNOTATION: template_hash(template),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": server_labels(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": STARTUP_PERIOD_SECONDS * STARTUP_FAILURES + 60,
            "template": template,
        },
    }


def server_service(service: LMService, uid: str) -> dict[str, Any]:
    """The ClusterIP Service in front of the ready server pods (port 80)."""
    name = _name(service)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service, uid, name, server_labels(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": server_labels(name),
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": service.spec.serving.port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def server_pdb(service: LMService, uid: str) -> dict[str, Any]:
    """Voluntary evictions (node drains) take at most one server pod at a time."""
    name = _name(service)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(service, uid, pdb_name(name), server_labels(name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": server_labels(name)}},
    }


def deletion_costs(in_flight: dict[str, int], pod_names: Sequence[str]) -> dict[str, int]:
    """Each pod's deletion cost before a scale-down: its in-flight requests, so that the
    ReplicaSet controller removes the least-loaded pods first. A pod whose load is not
    known gets the highest cost seen (it may be busy; it goes last)."""
    known = [in_flight[n] for n in pod_names if n in in_flight]
    unknown_cost = max(known, default=0)
    return {n: in_flight.get(n, unknown_cost) for n in pod_names}


def validate_server_pod(service: LMService) -> list[str]:
    """The problems of the service's server pods (empty when they are allowed)."""
    try:
        server_pod_template(service, uid="", source=ModelSource("hf", "/model"))
    except InvalidPodError as exc:
        return exc.problems
    return []
