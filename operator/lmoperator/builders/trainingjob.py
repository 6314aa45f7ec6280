"""Manifests of an LMTrainingJob's children: the rendezvous store pod and Service, workers,
the rendezvous Secret and the job's NetworkPolicy.

Pure functions of the typed job: no API calls, no clock. Names are deterministic
(`<job>-rdzv`, `<job>-worker-<i>`), so the reconciler never creates a child twice.
"""

from __future__ import annotations

import base64
import json
import math
import posixpath
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lmoperator
from lmoperator.api import kinds
from lmoperator.api.common import ResourceRequirements, StorageLocation
from lmoperator.api.trainingjob import (
    MODEL_PRESETS,
    LMTrainingJob,
    ModelPreset,
    TokenizerType,
    effective_max_replicas,
)
from lmoperator.builders import pods
from lmoperator.builders.merge import merge_pod
from lmoperator.builders.pods import INDEX_LABEL, ROLE_LABEL, InvalidPodError
from lmworker.config import (
    CONFIG_ENV,
    EXPECTED_REPLICAS_ENV,
    INDEX_ENV,
    LOCAL_RANK_ENV,
    LOCAL_WORLD_SIZE_ENV,
    METRICS_PORT,
    POD_GROUP_ENV,
    POD_IP_ENV,
    RDZV_ENV,
    RDZV_PORT,
    SECRET_FILE_ENV,
    SECRET_KEY,
    SECRET_MOUNT,
    SPARE_ENV,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    THREADS_ENV,
    ModelConfig,
    TrainingConfig,
    WorkerConfig,
    default_intermediate_size,
)

KIND = kinds.TRAINING_JOB.kind
DEFAULT_WORKER_IMAGE = f"ghcr.io/elasticlm/worker:{lmoperator.__version__}"

JOB_LABEL = "elasticlm.io/job"
ROLE_WORKER = "worker"
# A warm spare (spec.elastic.warmSpares) until it is promoted: then it is relabelled a
# worker with the index it took, and keeps its name <job>-spare-<k>.
ROLE_SPARE = "spare"
ROLE_RDZV = "rdzv"
ROLE_NETWORK = "network"
WORKER_CONTAINER = "worker"
RDZV_CONTAINER = "rendezvous"

# Container paths where claims are mounted; devcluster rewrites them to local directories.
DATA_MOUNT = "/data"
CHECKPOINT_MOUNT = "/checkpoints"
INIT_MODEL_MOUNT = "/init-model"
TMP_MOUNT = "/tmp"

# 256 byte values plus an end-of-text token.
BYTES_VOCAB_SIZE = 257
DEFAULT_BPE_VOCAB_SIZE = 4096
WORKER_GRACE_SECONDS = 60
# /healthz answers from a thread of its own once the model is loaded (10 min allowed;
# probed every second so that readiness, which waits for it, lags by no more).
# A worker whose interpreter froze (a native deadlock holding the GIL) stops answering:
# after a minute the kubelet kills it, and it is replaced like any failed worker rather
# than holding its index for ever. A busy but live worker answers within milliseconds.
WORKER_STARTUP_PROBE = {"periodSeconds": 1, "failureThreshold": 600}
WORKER_LIVENESS_PROBE = {"periodSeconds": 10, "timeoutSeconds": 10, "failureThreshold": 6}

# Read by lmworker.train but not (yet) in lmworker.config: where the worker writes its
# termination message (the operator reads completion from it), and its torch threads.

# Set by the operator; a user's spec.worker.env may not replace them.
RESERVED_ENV = frozenset(
    {
        POD_IP_ENV,
        "POD_NAME",
        CONFIG_ENV,
        RDZV_ENV,
        INDEX_ENV,
        EXPECTED_REPLICAS_ENV,
        SECRET_FILE_ENV,
        SPARE_ENV,
        # Set by the pod's main process for each of its training processes.
        LOCAL_RANK_ENV,
        LOCAL_WORLD_SIZE_ENV,
        POD_GROUP_ENV,
    }
)
SECRET_VOLUME = "rdzv-auth"
TEMPLATE_PATH = "spec.worker.podTemplate"
WORKER_POD_RULES = pods.PodRules(
    container=WORKER_CONTAINER,
    template_path=TEMPLATE_PATH,
    reserved_env=RESERVED_ENV,
    restart_policy="Never",
    restart_policy_hint=(
        "the operator replaces failed workers itself (set spec.runPolicy.restartPolicy instead)"
    ),
)


# --------------------------------------------------------------------------------------
# Names and labels


def rdzv_name(job: str) -> str:
    return f"{job}-rdzv"


def rdzv_secret_name(job: str) -> str:
    return f"{job}-rdzv-auth"


def network_policy_name(job: str) -> str:
    return f"{job}-pods"


def worker_name(job: str, index: int) -> str:
    return f"{job}-worker-{index}"


def spare_name(job: str, number: int) -> str:
    return f"{job}-spare-{number}"


def job_labels(job: str, role: str) -> dict[str, str]:
    return {JOB_LABEL: job, ROLE_LABEL: role}


def worker_selector(job: str) -> str:
    """The label selector of the job's worker pods (status.selector, for the scale API)."""
    return f"{JOB_LABEL}={job},{ROLE_LABEL}={ROLE_WORKER}"


def children_selector(job: str) -> str:
    return f"{JOB_LABEL}={job}"


def _name(job: LMTrainingJob) -> str:
    if not job.metadata.name:
        raise ValueError("the job has no metadata.name")
    return job.metadata.name


def _metadata(job: LMTrainingJob, uid: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return pods.child_metadata(
        kinds.TRAINING_JOB, _name(job), uid, job.metadata.namespace, name, labels
    )


# --------------------------------------------------------------------------------------
# The worker's configuration (the lmworker.config contract)


def _in_claim(location: StorageLocation, mount: str) -> str:
    return posixpath.join(mount, location.path) if location.claim_name else location.path


def model_config(job: LMTrainingJob) -> ModelConfig:
    """The architecture to train: a preset or an explicit size, defaults resolved.

    For `model.hf` the operator cannot read the model's config.json; the tiny preset's
    shape is a placeholder and the worker takes the architecture from `init_from_hf`.
    """
    spec = job.spec
    tokenizer = spec.data.tokenizer
    vocab = (
        BYTES_VOCAB_SIZE
        if tokenizer.type == TokenizerType.BYTES
        else tokenizer.vocab_size or DEFAULT_BPE_VOCAB_SIZE
    )
    size = spec.model.size
    if size is not None:
        return ModelConfig(
            vocab_size=vocab,
            layers=size.layers,
            hidden_size=size.hidden_size,
            heads=size.heads,
            kv_heads=size.kv_heads or size.heads,
            intermediate_size=size.intermediate_size or default_intermediate_size(size.hidden_size),
            context_length=size.context_length,
        )
    preset = MODEL_PRESETS[spec.model.preset or ModelPreset.TINY]
    return ModelConfig(
        vocab_size=vocab,
        layers=preset.layers,
        hidden_size=preset.hidden_size,
        heads=preset.heads,
        kv_heads=preset.kv_heads,
        intermediate_size=default_intermediate_size(preset.hidden_size),
        context_length=preset.context_length,
    )


def worker_config(job: LMTrainingJob) -> WorkerConfig:
    """What every worker pod receives in ELASTICLM_CONFIG."""
    spec = job.spec
    t = spec.training
    tokenizer = spec.data.tokenizer
    checkpoint = spec.checkpoint
    hf = spec.model.hf
    tokenizer_path = None
    if tokenizer.path is not None:
        tokenizer_path = (
            posixpath.join(DATA_MOUNT, tokenizer.path) if spec.data.claim_name else tokenizer.path
        )
    return WorkerConfig(
        job=_name(job),
        namespace=job.metadata.namespace or "default",
        model=model_config(job),
        training=TrainingConfig(
            steps=t.steps,
            global_batch_size=t.global_batch_size,
            micro_batch_size=t.micro_batch_size,
            learning_rate=t.learning_rate,
            warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.steps * 5 // 100,
            weight_decay=t.weight_decay,
            grad_clip=t.grad_clip,
            precision=t.precision.value,
            sync=t.sync.value,
            local_sgd_sync_steps=t.local_sgd_sync_steps,
            seed=t.seed,
            sequence_length=t.sequence_length,
        ),
        data_path=_in_claim(spec.data, DATA_MOUNT),
        tokenizer=tokenizer.type.value,
        bpe_vocab_size=tokenizer.vocab_size or DEFAULT_BPE_VOCAB_SIZE,
        tokenizer_path=tokenizer_path,
        validation_fraction=spec.data.validation_fraction,
        init_from_hf=_in_claim(hf, INIT_MODEL_MOUNT) if hf is not None else None,
        checkpoint_dir=_in_claim(checkpoint, CHECKPOINT_MOUNT) if checkpoint else None,
        checkpoint_interval_steps=checkpoint.interval_steps if checkpoint else 100,
        checkpoint_async=checkpoint.async_ if checkpoint else False,
        checkpoint_keep=checkpoint.keep if checkpoint else 3,
        min_replicas=spec.elastic.min_replicas,
        max_replicas=effective_max_replicas(spec),
        processes_per_pod=spec.worker.processes_per_pod,
    )


# --------------------------------------------------------------------------------------
# Pods and the Service


_CPU_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m?)$")


def cpu_threads(resources: ResourceRequirements | None) -> int | None:
    """Threads for torch from the CPU request (else limit): whole cores, rounded up, >= 1.

    Workers sharing a node's cores then do not oversubscribe them. None when the pod
    asks for no CPU or the quantity is unusual (an exponent, a suffix other than m).
    """
    if resources is None:
        return None
    for amounts in (resources.requests, resources.limits):
        cpu = (amounts or {}).get("cpu")
        if cpu is None:
            continue
        found = _CPU_QUANTITY.match(str(cpu))
        if not found:
            return None
        cores = float(found.group(1)) / (1000 if found.group(2) else 1)
        return max(1, math.ceil(cores))
    return None


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _scheduling(job: LMTrainingJob, pod: dict[str, Any]) -> None:
    """Scheduler, priority, queue, node selection: shared by the workers and the store."""
    scheduling = job.spec.run_policy.scheduling
    pods.apply_scheduling(
        pod,
        job.spec.worker,
        pods.Scheduling(
            scheduler_name=scheduling.scheduler_name,
            priority_class_name=scheduling.priority_class_name,
            queue=scheduling.queue,
        ),
    )


def _image(job: LMTrainingJob, container: dict[str, Any]) -> None:
    pods.set_image(container, job.spec.worker, DEFAULT_WORKER_IMAGE)


# --------------------------------------------------------------------------------------
# Rendezvous security


def new_rdzv_token() -> str:
    """A fresh random token for a job's Secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def rdzv_secret(job: LMTrainingJob, uid: str, token: str) -> dict[str, Any]:
    """The job's rendezvous secret: the store refuses clients that cannot prove they hold
    it (lmworker.storeauth). Made once, before the rendezvous pod; owned by the job, so it
    goes with it."""
    name = _name(job)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(job, uid, rdzv_secret_name(name), job_labels(name, ROLE_RDZV)),
        "data": {SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


def _secret_mount(job: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(volume, mount, env) that put the job's secret into a container."""
    volume = {
        "name": SECRET_VOLUME,
        "secret": {"secretName": rdzv_secret_name(job), "defaultMode": 0o440},
    }
    mount = {"name": SECRET_VOLUME, "mountPath": SECRET_MOUNT, "readOnly": True}
    env = {"name": SECRET_FILE_ENV, "value": posixpath.join(SECRET_MOUNT, SECRET_KEY)}
    return volume, mount, env


class InvalidPeerError(ValueError):
    """A NetworkPolicy peer given to the operator is not usable; the message says why."""


@dataclass(frozen=True)
class NetworkPeers:
    """Who, besides the job's own pods, may reach its pods (the metrics port only):
    the operator's pods and the metrics scrapers a cluster admin names (Helm values
    `networkPolicy.metricsScrapers`). Each peer is a NetworkPolicyPeer."""

    operator: tuple[Mapping[str, Any], ...] = ()
    scrapers: tuple[Mapping[str, Any], ...] = ()


NO_PEERS = NetworkPeers()
_PEER_FIELDS = frozenset({"podSelector", "namespaceSelector", "ipBlock"})
_SELECTOR_FIELDS = frozenset({"matchLabels", "matchExpressions"})


def parse_peers(text: str, flag: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of NetworkPolicyPeer objects (or one object); InvalidPeerError names
    the flag and what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidPeerError(f"{flag}: not JSON ({exc})") from None
    items = raw if isinstance(raw, list) else [raw]
    peers: list[dict[str, Any]] = []
    for i, peer in enumerate(items):
        where = f"{flag}[{i}]"
        if not isinstance(peer, dict) or not peer:
            raise InvalidPeerError(
                f"{where}: a NetworkPolicyPeer is an object with podSelector, "
                "namespaceSelector or ipBlock"
            )
        unknown = sorted(set(peer) - _PEER_FIELDS)
        if unknown:
            raise InvalidPeerError(
                f"{where}: unknown field(s) {', '.join(unknown)}; a NetworkPolicyPeer has "
                "podSelector, namespaceSelector or ipBlock"
            )
        if "ipBlock" in peer and len(peer) > 1:
            raise InvalidPeerError(f"{where}: ipBlock cannot be combined with a selector")
        for key in ("podSelector", "namespaceSelector"):
            selector = peer.get(key)
            if selector is None:
                continue
            if not isinstance(selector, dict) or set(selector) - _SELECTOR_FIELDS:
                raise InvalidPeerError(
                    f"{where}.{key}: a label selector has matchLabels and matchExpressions only"
                )
        if "ipBlock" in peer and not isinstance((peer["ipBlock"] or {}).get("cidr"), str):
            raise InvalidPeerError(f"{where}.ipBlock: needs a cidr, e.g. 10.0.0.0/8")
        peers.append(peer)
    return tuple(peers)


def network_policy(job: LMTrainingJob, uid: str, peers: NetworkPeers) -> dict[str, Any]:
    """Ingress to the job's pods: its own pods on every port (gloo connects workers on
    ephemeral ports, the rendezvous on 29400), the operator (its scrapes and a warm
    spare's promotion order) and the named scrapers on the metrics port, nothing else.
    Spares carry the job's label, so they are selected and admitted like workers. Egress
    is left alone."""
    name = _name(job)
    own = {"podSelector": {"matchLabels": {JOB_LABEL: name}}}
    ingress: list[dict[str, Any]] = [{"from": [own]}]
    metrics_peers: Sequence[Mapping[str, Any]] = [*peers.operator, *peers.scrapers]
    # Never an empty `from`: that would admit every source.
    if metrics_peers:
        ingress.append(
            {
                "from": [dict(p) for p in metrics_peers],
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, uid, network_policy_name(name), job_labels(name, ROLE_NETWORK)),
        "spec": {
            "podSelector": {"matchLabels": {JOB_LABEL: name}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


# --------------------------------------------------------------------------------------
# Rendezvous store


def rdzv_service(job: LMTrainingJob, uid: str) -> dict[str, Any]:
    """The stable address of the rendezvous store (its cluster IP: devcluster has no DNS)."""
    name = _name(job)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, uid, rdzv_name(name), job_labels(name, ROLE_RDZV)),
        "spec": {
            "type": "ClusterIP",
            "selector": job_labels(name, ROLE_RDZV),
            "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT}],
        },
    }


def rdzv_pod(job: LMTrainingJob, uid: str) -> dict[str, Any]:
    """The per-job rendezvous store: losing any worker never loses the store."""
    name = _name(job)
    volume, mount, secret_env = _secret_mount(name)
    container: dict[str, Any] = {
        "name": RDZV_CONTAINER,
        "command": [
            "python",
            "-m",
            "lmworker.rendezvous",
            "--host",
            f"$({POD_IP_ENV})",
            "--port",
            str(RDZV_PORT),
            "--min-nodes",
            str(job.spec.elastic.min_replicas),
            "--max-nodes",
            str(effective_max_replicas(job.spec)),
        ],
        "env": [
            _field_env(POD_IP_ENV, "status.podIP"),
            {"name": "PROMETHEUS_DISABLE_CREATED_SERIES", "value": "True"},
            secret_env,
        ],
        "volumeMounts": [mount],
        "ports": [
            {"name": "rdzv", "containerPort": RDZV_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": {"tcpSocket": {"port": RDZV_PORT}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "securityContext": pods.container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    _image(job, container)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(job, uid, rdzv_name(name), job_labels(name, ROLE_RDZV)),
        "spec": {
            "restartPolicy": "Always",
            "securityContext": {**pods.pod_security(), **_template_pod_security(job)},
            "containers": [container],
            "volumes": [volume],
        },
    }
    _scheduling(job, pod)
    return pod


def _template_pod_security(job: LMTrainingJob) -> dict[str, Any]:
    """The pod-level securityContext of spec.worker.podTemplate: the user IDs and profile
    a cluster demands hold for the job's store as much as for its workers."""
    spec = (job.spec.worker.pod_template or {}).get("spec")
    security = spec.get("securityContext") if isinstance(spec, dict) else None
    return dict(security) if isinstance(security, dict) else {}


def _claim_volume(name: str, claim: str, read_only: bool) -> dict[str, Any]:
    source: dict[str, Any] = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return {"name": name, "persistentVolumeClaim": source}


def worker_pod(
    job: LMTrainingJob, uid: str, index: int, rdzv_address: str, *, spare: bool = False
) -> dict[str, Any]:
    """Worker `index`, with spec.worker.podTemplate merged in and checked.

    With `spare`, warm spare number `index` instead (`<job>-spare-<index>`): the same pod
    (resources, volumes, the secret, the template), standing by outside the world until
    the operator promotes it (lmworker.metrics). `rdzv_address` is "<cluster IP>:<port>"
    of the rendezvous Service. Raises InvalidPodError when the merged pod is not allowed.
    """
    spec = job.spec
    name = _name(job)
    secret_volume, secret_mount, secret_env = _secret_mount(name)
    identity = (
        {"name": SPARE_ENV, "value": "1"} if spare else {"name": INDEX_ENV, "value": str(index)}
    )
    env: list[dict[str, Any]] = [
        _field_env(POD_IP_ENV, "status.podIP"),
        _field_env("POD_NAME", "metadata.name"),
        {"name": CONFIG_ENV, "value": worker_config(job).to_json()},
        {"name": RDZV_ENV, "value": rdzv_address},
        identity,
        {"name": EXPECTED_REPLICAS_ENV, "value": str(spec.replicas)},
        secret_env,
        {"name": "PROMETHEUS_DISABLE_CREATED_SERIES", "value": "True"},
        {"name": "TMPDIR", "value": TMP_MOUNT},
        {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
    ]
    threads = cpu_threads(spec.worker.resources)
    if threads is not None and all(e.name != THREADS_ENV for e in spec.worker.env or []):
        # The pod's CPUs are shared by its training processes.
        per_process = max(1, threads // spec.worker.processes_per_pod)
        env.append({"name": THREADS_ENV, "value": str(per_process)})
    env += [
        e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in spec.worker.env or []
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}, secret_volume]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_MOUNT}, secret_mount]
    if spec.data.claim_name:
        volumes.append(_claim_volume("data", spec.data.claim_name, read_only=True))
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
    if spec.checkpoint is not None and spec.checkpoint.claim_name:
        volumes.append(_claim_volume("checkpoints", spec.checkpoint.claim_name, read_only=False))
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
    if spec.model.hf is not None and spec.model.hf.claim_name:
        volumes.append(_claim_volume("init-model", spec.model.hf.claim_name, read_only=True))
        mounts.append({"name": "init-model", "mountPath": INIT_MODEL_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "command": ["python", "-m", "lmworker.train"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT},
            **WORKER_STARTUP_PROBE,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT},
            **WORKER_LIVENESS_PROBE,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": METRICS_PORT},
            "periodSeconds": 1,
        },
        "volumeMounts": mounts,
        "securityContext": pods.container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    _image(job, container)
    if spec.worker.resources is not None:
        resources = spec.worker.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
        if resources:
            container["resources"] = resources
    if spare:
        labels, pod_name = job_labels(name, ROLE_SPARE), spare_name(name, index)
    else:
        labels = {**job_labels(name, ROLE_WORKER), INDEX_LABEL: str(index)}
        pod_name = worker_name(name, index)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(job, uid, pod_name, labels),
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": WORKER_GRACE_SECONDS,
            "securityContext": pods.pod_security(),
            "containers": [container],
            "volumes": volumes,
        },
    }
    _scheduling(job, pod)
    template = spec.worker.pod_template
    merged = merge_pod(pod, template) if template else pod
    problems = list(pods.pod_problems(pod, merged, template or {}, WORKER_POD_RULES))
    problems += [
        f"spec.worker.env[{i}].name: {e.name} is set by the operator; remove it"
        for i, e in enumerate(spec.worker.env or [])
        if e.name in RESERVED_ENV
    ]
    if problems:
        raise InvalidPodError(problems)
    return merged


def validate_worker_pod(job: LMTrainingJob) -> list[str]:
    """The problems of the job's worker pods (empty when they are allowed)."""
    try:
        worker_pod(job, uid="", index=0, rdzv_address=f"0.0.0.0:{RDZV_PORT}")
    except InvalidPodError as exc:
        return exc.problems
    return []
