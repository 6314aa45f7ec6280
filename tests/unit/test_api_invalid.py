"""Invalid manifests are rejected with the exact message a user should read.

Each case starts from a valid manifest (the examples, copied here so that editing an
example cannot silently change what is tested) and makes one change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from lmoperator.api import InvalidResourceError, parse_resource

JOB: dict[str, Any] = {
    "apiVersion": "elasticlm.io/v1alpha1",
    "kind": "LMTrainingJob",
    "metadata": {"name": "tiny-lm"},
    "spec": {
        "replicas": 2,
        "elastic": {"minReplicas": 1, "maxReplicas": 3, "maxRestarts": 5},
        "model": {"preset": "tiny"},
        "data": {
            "claimName": "tiny-lm-data",
            "path": "corpus.txt",
            "tokenizer": {"type": "Bytes"},
        },
        "training": {
            "steps": 300,
            "globalBatchSize": 24,
            "microBatchSize": 4,
            "learningRate": 0.001,
            "warmupSteps": 20,
            "precision": "fp32",
            "sync": "DDP",
            "seed": 1,
        },
        "checkpoint": {
            "claimName": "tiny-lm-checkpoints",
            "path": "tiny-lm",
            "intervalSteps": 50,
            "keep": 2,
        },
        "worker": {
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"memory": "2Gi"},
            }
        },
        "runPolicy": {"restartPolicy": "OnFailure", "backoffLimit": 4, "cleanPodPolicy": "Running"},
    },
}

SERVICE: dict[str, Any] = {
    "apiVersion": "elasticlm.io/v1alpha1",
    "kind": "LMService",
    "metadata": {"name": "tiny-lm"},
    "spec": {
        "replicas": 1,
        "model": {"fromTrainingJob": {"name": "tiny-lm"}},
        "compression": {"quantization": "int8", "maxPerplexityIncrease": 0.05},
        "serving": {"maxBatchSize": 8, "maxBatchDelayMs": 10, "maxQueue": 64, "maxNewTokens": 128},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [{"type": "InFlightRequests", "target": 4}],
            "scaleDown": {"maxRate": 2, "stabilizationSeconds": 60},
        },
        "worker": {"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}},
    },
}

DELETE = object()
"""A change's value that removes the key."""

Changes = Mapping[str, Any]


def changed(base: Mapping[str, Any], changes: Changes) -> dict[str, Any]:
    """A deep copy of `base` with each dotted path set (or deleted, with DELETE).

    Missing intermediate objects are created; a path may not index into lists.
    """
    doc = copy.deepcopy(dict(base))
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return doc


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(InvalidResourceError) as info:
        parse_resource(doc)
    return info.value.problems


def test_bases_are_valid() -> None:
    assert parse_resource(JOB).kind == "LMTrainingJob"
    assert parse_resource(SERVICE).kind == "LMService"


# (id, base, changes, the exact problems reported, in order)
Case = tuple[str, dict[str, Any], Changes, list[str]]

_SIZE = "spec.model.size"
_HINT_JOB = "; `kubectl explain lmtj.spec` lists the fields"
_HINT_SVC = "; `kubectl explain lms.spec` lists the fields"
_QUANTITY = "must be a Kubernetes quantity such as 2, 500m or 4Gi"
_DNS_SUBDOMAIN = (
    "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit"
)
_DNS_LABEL = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)


def _hint(target: str) -> str:
    return f"; `kubectl explain {target}` lists the fields"


_NAME_RULE = "must start with a lowercase letter and contain only lowercase letters, digits and '-'"

FIELD_BOUNDS: list[Case] = [
    ("job-replicas-0", JOB, {"spec.replicas": 0}, ["spec.replicas: must be >= 1 (got 0)"]),
    (
        "job-replicas-above-4096",
        JOB,
        {"spec.replicas": 5000},
        ["spec.replicas: must be <= 4096 (got 5000)"],
    ),
    (
        "learning-rate-negative",
        JOB,
        {"spec.training.learningRate": -1},
        ["spec.training.learningRate: must be > 0.0 (got -1)"],
    ),
    (
        "learning-rate-0",
        JOB,
        {"spec.training.learningRate": 0},
        ["spec.training.learningRate: must be > 0.0 (got 0)"],
    ),
    ("steps-0", JOB, {"spec.training.steps": 0}, ["spec.training.steps: must be >= 1 (got 0)"]),
    (
        "micro-batch-0",
        JOB,
        {"spec.training.microBatchSize": 0},
        ["spec.training.microBatchSize: must be >= 1 (got 0)"],
    ),
    (
        "min-efficiency-0",
        JOB,
        {"spec.autoscaling.minEfficiency": 0},
        ["spec.autoscaling.minEfficiency: must be > 0.0 (got 0)"],
    ),
    (
        "min-efficiency-1.5",
        JOB,
        {"spec.autoscaling.minEfficiency": 1.5},
        ["spec.autoscaling.minEfficiency: must be <= 1.0 (got 1.5)"],
    ),
    (
        "validation-fraction-0.5",
        JOB,
        {"spec.data.validationFraction": 0.5},
        ["spec.data.validationFraction: must be < 0.5 (got 0.5)"],
    ),
    (
        "vocab-size-259",
        JOB,
        {"spec.data.tokenizer": {"type": "BPE", "vocabSize": 259}},
        ["spec.data.tokenizer.vocabSize: must be >= 260 (got 259)"],
    ),
    ("keep-0", JOB, {"spec.checkpoint.keep": 0}, ["spec.checkpoint.keep: must be >= 1 (got 0)"]),
    (
        "max-restarts-negative",
        JOB,
        {"spec.elastic.maxRestarts": -1},
        ["spec.elastic.maxRestarts: must be >= 0 (got -1)"],
    ),
    (
        "hidden-size-below-8",
        JOB,
        {"spec.model": {"size": {"layers": 1, "hiddenSize": 4, "heads": 2}}},
        ["spec.model.size.hiddenSize: must be >= 8 (got 4)"],
    ),
    (
        "service-replicas-negative",
        SERVICE,
        {"spec.replicas": -1},
        ["spec.replicas: must be >= 0 (got -1)"],
    ),
    (
        "port-80",
        SERVICE,
        {"spec.serving.port": 80},
        ["spec.serving.port: must be >= 1024 (got 80)"],
    ),
    (
        "pruning-amount-1",
        SERVICE,
        {"spec.compression.pruning": {"amount": 1.0}},
        ["spec.compression.pruning.amount: must be < 1.0 (got 1.0)"],
    ),
    (
        "tolerance-1",
        SERVICE,
        {"spec.autoscaling.tolerance": 1},
        ["spec.autoscaling.tolerance: must be < 1.0 (got 1)"],
    ),
    (
        "scale-down-max-rate-1",
        SERVICE,
        {"spec.autoscaling.scaleDown.maxRate": 1},
        ["spec.autoscaling.scaleDown.maxRate: must be > 1.0 (got 1)"],
    ),
    (
        "metric-target-0",
        SERVICE,
        {"spec.autoscaling.metrics": [{"type": "QueueDepth", "target": 0}]},
        ["spec.autoscaling.metrics[0].target: must be > 0.0 (got 0)"],
    ),
    (
        "metrics-more-than-8",
        SERVICE,
        {"spec.autoscaling.metrics": [{"type": "QueueDepth", "target": 1}] * 9},
        ["spec.autoscaling.metrics: must have at most 8 item(s)"],
    ),
]

ENUMS: list[Case] = [
    (
        "precision-fp8",
        JOB,
        {"spec.training.precision": "fp8"},
        ["spec.training.precision: must be one of 'auto', 'fp32', 'bf16' or 'fp16' (got 'fp8')"],
    ),
    (
        "sync-async",
        JOB,
        {"spec.training.sync": "Async"},
        ["spec.training.sync: must be one of 'DDP' or 'LocalSGD' (got 'Async')"],
    ),
    (
        "restart-policy-always",
        JOB,
        {"spec.runPolicy.restartPolicy": "Always"},
        [
            "spec.runPolicy.restartPolicy: must be one of 'OnFailure', 'Never' or 'ExitCode'"
            " (got 'Always')"
        ],
    ),
    (
        "clean-pod-policy-some",
        JOB,
        {"spec.runPolicy.cleanPodPolicy": "Some"},
        ["spec.runPolicy.cleanPodPolicy: must be one of 'All', 'Running' or 'None' (got 'Some')"],
    ),
    (
        "tokenizer-type-wordpiece",
        JOB,
        {"spec.data.tokenizer.type": "WordPiece"},
        ["spec.data.tokenizer.type: must be one of 'Bytes' or 'BPE' (got 'WordPiece')"],
    ),
    (
        "autoscaling-policy-sometimes",
        JOB,
        {"spec.autoscaling.policy": "Sometimes"},
        [
            "spec.autoscaling.policy: must be one of 'None', 'Throughput' or 'Goodput'"
            " (got 'Sometimes')"
        ],
    ),
    (
        "model-preset-huge",
        JOB,
        {"spec.model.preset": "huge"},
        ["spec.model.preset: must be one of 'tiny', 'small' or 'base' (got 'huge')"],
    ),
    (
        "image-pull-policy-lowercase",
        JOB,
        {"spec.worker.imagePullPolicy": "always"},
        [
            "spec.worker.imagePullPolicy: must be one of 'Always', 'IfNotPresent' or 'Never'"
            " (got 'always')"
        ],
    ),
    (
        "quantization-int4",
        SERVICE,
        {"spec.compression.quantization": "int4"},
        ["spec.compression.quantization: must be one of 'none' or 'int8' (got 'int4')"],
    ),
    (
        "serving-precision-fp8",
        SERVICE,
        {"spec.precision": "fp8"},
        ["spec.precision: must be one of 'auto', 'fp32', 'bf16' or 'fp16' (got 'fp8')"],
    ),
    (
        "runtime-sglang",
        SERVICE,
        {"spec.runtime": "SGLang"},
        ["spec.runtime: must be one of 'Builtin' or 'VLLM' (got 'SGLang')"],
    ),
    (
        "pruning-method-random",
        SERVICE,
        {"spec.compression.pruning": {"amount": 0.5, "method": "Random"}},
        [
            "spec.compression.pruning.method: must be one of 'Magnitude' or 'Structured'"
            " (got 'Random')"
        ],
    ),
    (
        "metric-type-gpu",
        SERVICE,
        {"spec.autoscaling.metrics": [{"type": "GPUUtilization", "target": 1}]},
        [
            "spec.autoscaling.metrics[0].type: must be one of 'InFlightRequests', 'QueueDepth',"
            " 'RequestsPerSecond', 'TokensPerSecond' or 'LatencyP95' (got 'GPUUtilization')"
        ],
    ),
    (
        "metrics-source-datadog",
        SERVICE,
        {"spec.autoscaling.source": "Datadog"},
        ["spec.autoscaling.source: must be one of 'Pods' or 'Prometheus' (got 'Datadog')"],
    ),
]

TYPES: list[Case] = [
    (
        "replicas-word",
        JOB,
        {"spec.replicas": "two"},
        ["spec.replicas: must be an integer (got 'two')"],
    ),
    (
        "steps-fraction",
        JOB,
        {"spec.training.steps": 1.5},
        ["spec.training.steps: must be an integer (got 1.5)"],
    ),
    (
        "training-not-an-object",
        JOB,
        {"spec.training": "fast"},
        ["spec.training: must be an object (got 'fast')"],
    ),
    (
        "env-not-a-list",
        JOB,
        {"spec.worker.env": "A=1"},
        ["spec.worker.env: must be a list (got 'A=1')"],
    ),
    (
        "image-not-a-string",
        JOB,
        {"spec.worker.image": 3},
        ["spec.worker.image: must be a string (got 3)"],
    ),
    # The API server rejects a string or a bool where the schema says integer or
    # boolean; so must the models (they must not coerce "yes" to True or True to 1).
    (
        "suspend-yes",
        JOB,
        {"spec.runPolicy.suspend": "yes"},
        ["spec.runPolicy.suspend: must be true or false (got 'yes')"],
    ),
    (
        "replicas-numeric-string",
        JOB,
        {"spec.replicas": "2"},
        ["spec.replicas: must be an integer (got '2')"],
    ),
    (
        "replicas-bool",
        JOB,
        {"spec.replicas": True},
        ["spec.replicas: must be an integer (got True)"],
    ),
    (
        "learning-rate-string",
        JOB,
        {"spec.training.learningRate": "0.001"},
        ["spec.training.learningRate: must be a number (got '0.001')"],
    ),
]

UNKNOWN_FIELDS: list[Case] = [
    (
        "typo-at-spec-level",
        JOB,
        {"spec.trainig": {"steps": 10}},
        ["spec.trainig: unknown field, check its spelling" + _HINT_JOB],
    ),
    (
        "typo-nested",
        JOB,
        {"spec.training.lerningRate": 0.01},
        [
            "spec.training.lerningRate: unknown field, check its spelling"
            + _hint("lmtj.spec.training")
        ],
    ),
    (
        "typo-in-service",
        SERVICE,
        {"spec.serving.maxBatch": 4},
        ["spec.serving.maxBatch: unknown field, check its spelling" + _hint("lms.spec.serving")],
    ),
    (
        "typo-in-list-item",
        SERVICE,
        {"spec.autoscaling.metrics": [{"type": "QueueDepth", "target": 1, "tagret": 2}]},
        [
            "spec.autoscaling.metrics[0].tagret: unknown field, check its spelling"
            + _hint("lms.spec.autoscaling.metrics")
        ],
    ),
    # The wire format is camelCase: the API server drops `run_policy` as unknown, so the
    # job would silently run with the default run policy. It must be rejected here too.
    (
        "snake-case-key-in-manifest",
        JOB,
        {"spec.run_policy": JOB["spec"]["runPolicy"], "spec.runPolicy": DELETE},
        ["spec.run_policy: unknown field, check its spelling" + _HINT_JOB],
    ),
    # A typo outside the spec: `kubectl explain lmtj.spec` is the wrong place to look.
    (
        "typo-at-top-level",
        JOB,
        {"stauts": {}},
        ["stauts: unknown field, check its spelling; `kubectl explain lmtj` lists the fields"],
    ),
]

MISSING_REQUIRED: list[Case] = [
    ("spec", JOB, {"spec": DELETE}, ["spec: is required"]),
    ("data", JOB, {"spec.data": DELETE}, ["spec.data: is required"]),
    ("data-path", JOB, {"spec.data.path": DELETE}, ["spec.data.path: is required"]),
    (
        "checkpoint-path",
        JOB,
        {"spec.checkpoint.path": DELETE},
        ["spec.checkpoint.path: is required"],
    ),
    (
        "size-heads",
        JOB,
        {"spec.model": {"size": {"layers": 2, "hiddenSize": 128}}},
        ["spec.model.size.heads: is required"],
    ),
    ("service-model", SERVICE, {"spec.model": DELETE}, ["spec.model: is required"]),
    (
        "autoscaling-max-replicas",
        SERVICE,
        {"spec.autoscaling.maxReplicas": DELETE},
        ["spec.autoscaling.maxReplicas: is required"],
    ),
    (
        "metric-target",
        SERVICE,
        {"spec.autoscaling.metrics": [{"type": "QueueDepth"}]},
        ["spec.autoscaling.metrics[0].target: is required"],
    ),
    (
        "pruning-amount",
        SERVICE,
        {"spec.compression.pruning": {"method": "Structured"}},
        ["spec.compression.pruning.amount: is required"],
    ),
    (
        "training-job-name",
        SERVICE,
        {"spec.model.fromTrainingJob": {"step": 100}},
        ["spec.model.fromTrainingJob.name: is required"],
    ),
]

PATTERNS: list[Case] = [
    (
        "claim-name-capitals",
        JOB,
        {"spec.data.claimName": "Data"},
        [f"spec.data.claimName: {_DNS_SUBDOMAIN} (got 'Data')"],
    ),
    (
        "quantity-with-unit-word",
        JOB,
        {"spec.worker.resources.requests.cpu": "2 cores"},
        [f"spec.worker.resources.requests.cpu: {_QUANTITY} (got '2 cores')"],
    ),
    (
        "quantity-float",
        JOB,
        {"spec.worker.resources.limits.memory": 0.5},
        [f"spec.worker.resources.limits.memory: {_QUANTITY} (got 0.5)"],
    ),
    (
        "cron-three-fields",
        SERVICE,
        {
            "spec.autoscaling.schedules": [
                {"name": "peak", "cron": "0 8 *", "durationSeconds": 3600, "minReplicas": 2}
            ]
        },
        [
            "spec.autoscaling.schedules[0].cron: must be a five-field cron expression such as "
            "'0 8 * * 1-5' (got '0 8 *')"
        ],
    ),
    (
        "schedule-name-capitals",
        SERVICE,
        {
            "spec.autoscaling.schedules": [
                {"name": "Peak", "cron": "0 8 * * 1-5", "durationSeconds": 3600, "minReplicas": 2}
            ]
        },
        [f"spec.autoscaling.schedules[0].name: {_DNS_LABEL} (got 'Peak')"],
    ),
    (
        "prometheus-url-without-scheme",
        SERVICE,
        {"spec.autoscaling.source": "Prometheus", "spec.autoscaling.prometheus.url": "prom:9090"},
        ["spec.autoscaling.prometheus.url: must be an http:// or https:// URL (got 'prom:9090')"],
    ),
    (
        "env-name-with-space",
        JOB,
        {"spec.worker.env": [{"name": "MY VAR", "value": "1"}]},
        [
            "spec.worker.env[0].name: must be a variable name made of letters, digits, '-', '_' "
            "and '.', not starting with a digit (got 'MY VAR')"
        ],
    ),
    (
        "service-account-underscore",
        JOB,
        {"spec.worker.serviceAccountName": "my_sa"},
        [f"spec.worker.serviceAccountName: {_DNS_SUBDOMAIN} (got 'my_sa')"],
    ),
    (
        "training-job-ref-capitals",
        SERVICE,
        {"spec.model.fromTrainingJob.name": "Tiny-LM"},
        [f"spec.model.fromTrainingJob.name: {_DNS_LABEL} (got 'Tiny-LM')"],
    ),
]

DOTDOT: list[Case] = [
    (
        "data-path-leading-dotdot",
        JOB,
        {"spec.data.path": "../corpus.txt"},
        ["spec.data.path: must not contain '..' segments (got '../corpus.txt')"],
    ),
    (
        "checkpoint-path-inner-dotdot",
        JOB,
        {"spec.checkpoint.path": "runs/../../etc"},
        ["spec.checkpoint.path: must not contain '..' segments (got 'runs/../../etc')"],
    ),
    (
        "hf-path-dotdot-only",
        JOB,
        {"spec.model": {"hf": {"path": ".."}}},
        ["spec.model.hf.path: must not contain '..' segments (got '..')"],
    ),
    (
        "service-checkpoint-trailing-dotdot",
        SERVICE,
        {"spec.model": {"checkpoint": {"claimName": "ckpt", "path": "tiny-lm/.."}}},
        ["spec.model.checkpoint.path: must not contain '..' segments (got 'tiny-lm/..')"],
    ),
]

JOB_RULES: list[Case] = [
    (
        "replicas-below-min",
        JOB,
        {"spec.elastic.minReplicas": 3},
        ["spec.replicas (2) must be >= spec.elastic.minReplicas (3)"],
    ),
    (
        "replicas-above-max",
        JOB,
        {"spec.replicas": 4},
        ["spec.elastic.maxReplicas (3) must be >= spec.replicas (4)"],
    ),
    (
        "global-batch-not-multiple",
        JOB,
        {"spec.training.globalBatchSize": 26},
        [
            "spec.training.globalBatchSize (26) must be a multiple of"
            " spec.training.microBatchSize (4)"
        ],
    ),
    (
        "global-batch-too-small-for-max-replicas",
        JOB,
        {"spec.training.globalBatchSize": 8},
        [
            "spec.training.globalBatchSize (8) must hold at least one micro-batch of 4 for each"
            " of up to 3 workers: use 12 or more"
        ],
    ),
    (
        "global-batch-too-small-for-replicas",
        JOB,
        {
            "spec.replicas": 16,
            "spec.elastic.maxReplicas": DELETE,
            "spec.training.globalBatchSize": 32,
        },
        [
            "spec.training.globalBatchSize (32) must hold at least one micro-batch of 4 for each"
            " of up to 16 workers: use 64 or more"
        ],
    ),
    (
        "global-batch-too-small-for-processes",
        JOB,
        {"spec.worker.processesPerPod": 2, "spec.training.globalBatchSize": 16},
        [
            "spec.training.globalBatchSize (16) must hold at least one micro-batch of 4 for each"
            " of up to 6 training processes (3 workers x spec.worker.processesPerPod 2): use 24"
            " or more"
        ],
    ),
    (
        "warmup-equal-to-steps",
        JOB,
        {"spec.training.warmupSteps": 300},
        ["spec.training.warmupSteps (300) must be < spec.training.steps (300)"],
    ),
    (
        "model-no-source",
        JOB,
        {"spec.model": {}},
        ["spec.model must set exactly one of preset, size, hf"],
    ),
    (
        "model-two-sources",
        JOB,
        {"spec.model.hf": {"path": "llama"}},
        ["spec.model must set exactly one of preset, size, hf"],
    ),
    (
        "heads-do-not-divide-hidden-size",
        JOB,
        {"spec.model": {"size": {"layers": 2, "hiddenSize": 100, "heads": 3}}},
        [f"{_SIZE}.hiddenSize (100) must be a multiple of {_SIZE}.heads (3)"],
    ),
    (
        "odd-head-dimension",
        JOB,
        {"spec.model": {"size": {"layers": 2, "hiddenSize": 96, "heads": 32}}},
        [f"{_SIZE}.hiddenSize / {_SIZE}.heads (3) must be even for rotary position embeddings"],
    ),
    (
        "kv-heads-do-not-divide-heads",
        JOB,
        {"spec.model": {"size": {"layers": 2, "hiddenSize": 128, "heads": 4, "kvHeads": 3}}},
        [f"{_SIZE}.heads (4) must be a multiple of {_SIZE}.kvHeads (3)"],
    ),
    (
        "vocab-size-with-bytes",
        JOB,
        {"spec.data.tokenizer.vocabSize": 300},
        ["spec.data.tokenizer.vocabSize applies to type BPE only: remove it or set type: BPE"],
    ),
    (
        "autoscaling-without-max-replicas",
        JOB,
        {"spec.elastic.maxReplicas": DELETE, "spec.autoscaling.policy": "Throughput"},
        [
            "spec.autoscaling.policy Throughput needs room to scale: set"
            " spec.elastic.maxReplicas above spec.elastic.minReplicas (1)"
        ],
    ),
    (
        "autoscaling-with-max-equal-to-min",
        JOB,
        {
            "spec.replicas": 3,
            "spec.elastic.minReplicas": 3,
            "spec.autoscaling.policy": "Goodput",
        },
        [
            "spec.autoscaling.policy Goodput needs room to scale: set"
            " spec.elastic.maxReplicas above spec.elastic.minReplicas (3)"
        ],
    ),
]

_PEAK = {"name": "peak", "cron": "0 8 * * 1-5", "durationSeconds": 3600}

SERVICE_RULES: list[Case] = [
    (
        "service-model-no-source",
        SERVICE,
        {"spec.model": {}},
        ["spec.model must set exactly one of fromTrainingJob, checkpoint, hf"],
    ),
    (
        "service-model-two-sources",
        SERVICE,
        {"spec.model.hf": {"claimName": "models", "path": "llama"}},
        ["spec.model must set exactly one of fromTrainingJob, checkpoint, hf"],
    ),
    (
        "autoscaling-min-above-max",
        SERVICE,
        {"spec.replicas": 3, "spec.autoscaling.minReplicas": 4},
        [
            "spec.autoscaling.minReplicas (4) must be <= spec.autoscaling.maxReplicas (3)",
            "spec.replicas (3) must be >= spec.autoscaling.minReplicas (4)",
        ],
    ),
    (
        "service-replicas-below-min",
        SERVICE,
        {"spec.autoscaling.minReplicas": 2},
        ["spec.replicas (1) must be >= spec.autoscaling.minReplicas (2)"],
    ),
    (
        "service-replicas-above-max",
        SERVICE,
        {"spec.replicas": 5},
        ["spec.autoscaling.maxReplicas (3) must be >= spec.replicas (5)"],
    ),
    (
        "service-replicas-0-with-autoscaling",
        SERVICE,
        {"spec.replicas": 0},
        ["spec.replicas (0) must be >= spec.autoscaling.minReplicas (1)"],
    ),
    (
        "queue-smaller-than-batch",
        SERVICE,
        {"spec.serving.maxBatchSize": 100},
        ["spec.serving.maxQueue (64) must be >= spec.serving.maxBatchSize (100)"],
    ),
    (
        "queue-default-smaller-than-batch",
        SERVICE,
        {"spec.serving": {"maxBatchSize": 65}},
        ["spec.serving.maxQueue (64) must be >= spec.serving.maxBatchSize (65)"],
    ),
    (
        "int8-in-bf16",
        SERVICE,
        {"spec.precision": "bf16"},
        [
            "spec.compression.quantization int8 computes in fp32: set spec.precision to auto"
            " or fp32 (got bf16)"
        ],
    ),
    (
        "prometheus-source-without-url",
        SERVICE,
        {"spec.autoscaling.source": "Prometheus"},
        ["spec.autoscaling.source Prometheus needs spec.autoscaling.prometheus.url"],
    ),
    (
        "schedule-above-max-replicas",
        SERVICE,
        {
            "spec.autoscaling.schedules": [
                {**_PEAK, "name": "night", "minReplicas": 1},
                {**_PEAK, "minReplicas": 5},
            ]
        },
        [
            "spec.autoscaling.schedules peak: minReplicas (5) must be <="
            " spec.autoscaling.maxReplicas (3)"
        ],
    ),
]

ENV: list[Case] = [
    (
        "env-value-and-value-from",
        JOB,
        {
            "spec.worker.env": [
                {"name": "OK", "value": "1"},
                {
                    "name": "TOKEN",
                    "value": "x",
                    "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}},
                },
            ]
        },
        ["spec.worker.env[1]: set value or valueFrom, not both"],
    ),
    (
        "env-value-from-two-sources",
        JOB,
        {
            "spec.worker.env": [
                {
                    "name": "POD",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "metadata.name"},
                        "configMapKeyRef": {"name": "cfg", "key": "pod"},
                    },
                }
            ]
        },
        [
            "spec.worker.env[0].valueFrom: must set exactly one of secretKeyRef,"
            " configMapKeyRef, fieldRef"
        ],
    ),
    (
        "env-value-from-no-source",
        JOB,
        {"spec.worker.env": [{"name": "POD", "valueFrom": {}}]},
        [
            "spec.worker.env[0].valueFrom: must set exactly one of secretKeyRef,"
            " configMapKeyRef, fieldRef"
        ],
    ),
]

METADATA: list[Case] = [
    (
        "name-49-characters",
        JOB,
        {"metadata.name": "a" * 49},
        [
            f"metadata.name ({'a' * 49}) must be at most 48 characters so that the names of its"
            " pods and services stay valid"
        ],
    ),
    (
        "name-with-capitals",
        SERVICE,
        {"metadata.name": "Tiny-LM"},
        [f"metadata.name (Tiny-LM) {_NAME_RULE}"],
    ),
    (
        "name-starting-with-digit",
        JOB,
        {"metadata.name": "1tiny"},
        [f"metadata.name (1tiny) {_NAME_RULE}"],
    ),
    (
        "name-ending-with-dash",
        JOB,
        {"metadata.name": "tiny-"},
        [f"metadata.name (tiny-) {_NAME_RULE}"],
    ),
    (
        "name-with-dot",
        SERVICE,
        {"metadata.name": "tiny.lm"},
        [f"metadata.name (tiny.lm) {_NAME_RULE}"],
    ),
    (
        "metadata-not-an-object",
        JOB,
        {"metadata": "tiny-lm"},
        ["metadata: must be an object (got 'tiny-lm')"],
    ),
]

DOCUMENT: list[Case] = [
    (
        "wrong-kind",
        JOB,
        {"kind": "PyTorchJob"},
        ["kind: must be one of LMTrainingJob, LMService, LMTuningJob (got 'PyTorchJob')"],
    ),
    (
        "missing-kind",
        SERVICE,
        {"kind": DELETE},
        ["kind: must be one of LMTrainingJob, LMService, LMTuningJob (got None)"],
    ),
    (
        "wrong-api-version",
        JOB,
        {"apiVersion": "elasticlm.io/v1"},
        ["apiVersion: must be elasticlm.io/v1alpha1 (got 'elasticlm.io/v1')"],
    ),
    (
        "missing-api-version",
        SERVICE,
        {"apiVersion": DELETE},
        ["apiVersion: must be elasticlm.io/v1alpha1 (got None)"],
    ),
]

ALL_CASES = (
    FIELD_BOUNDS
    + ENUMS
    + TYPES
    + UNKNOWN_FIELDS
    + MISSING_REQUIRED
    + PATTERNS
    + DOTDOT
    + JOB_RULES
    + SERVICE_RULES
    + ENV
    + METADATA
    + DOCUMENT
)


@pytest.mark.parametrize(
    ("base", "changes", "expected"),
    [pytest.param(base, changes, expected, id=name) for name, base, changes, expected in ALL_CASES],
)
def test_invalid_manifest_is_rejected_with_exact_message(
    base: dict[str, Any], changes: Changes, expected: list[str]
) -> None:
    assert problems_of(changed(base, changes)) == expected


def test_case_ids_are_unique() -> None:
    names = [name for name, *_ in ALL_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(
            ["a", "list"],
            "must be a mapping with apiVersion, kind, metadata and spec, got a list",
            id="list",
        ),
        pytest.param(
            "kind: LMService",
            "must be a mapping with apiVersion, kind, metadata and spec, got a string",
            id="string",
        ),
        pytest.param(
            42,
            "must be a mapping with apiVersion, kind, metadata and spec, got a number",
            id="number",
        ),
    ],
)
def test_non_mapping_document_is_rejected(doc: Any, expected: str) -> None:
    with pytest.raises(InvalidResourceError) as info:
        parse_resource(doc)
    assert info.value.problems == [expected]
    assert info.value.what == "document"


def test_error_names_the_resource() -> None:
    with pytest.raises(InvalidResourceError) as info:
        parse_resource(changed(JOB, {"spec.replicas": 0}))
    assert info.value.what == "LMTrainingJob/tiny-lm"
    assert (
        str(info.value) == "LMTrainingJob/tiny-lm is invalid: spec.replicas: must be >= 1 (got 0)"
    )


# Rejections the API server makes (list-map keys must be unique, numbers finite,
# quantities ASCII) whose exact wording the models do not define yet: the manifest
# must be rejected, by a problem that names the field.
@pytest.mark.parametrize(
    ("base", "changes", "field"),
    [
        pytest.param(
            SERVICE,
            {
                "spec.autoscaling.metrics": [
                    {"type": "InFlightRequests", "target": 4},
                    {"type": "InFlightRequests", "target": 8},
                ]
            },
            "spec.autoscaling.metrics",
            id="duplicate-metric-type",
        ),
        pytest.param(
            SERVICE,
            {
                "spec.autoscaling.schedules": [
                    {**_PEAK, "minReplicas": 1},
                    {**_PEAK, "cron": "0 18 * * 1-5", "minReplicas": 2},
                ]
            },
            "spec.autoscaling.schedules",
            id="duplicate-schedule-name",
        ),
        pytest.param(
            JOB,
            {"spec.worker.env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
            "spec.worker.env",
            id="duplicate-env-name",
        ),
        pytest.param(
            JOB,
            {"spec.training.gradClip": float("inf")},
            "spec.training.gradClip",
            id="grad-clip-infinite",
        ),
        pytest.param(
            SERVICE,
            {"spec.autoscaling.metrics": [{"type": "QueueDepth", "target": float("inf")}]},
            "spec.autoscaling.metrics[0].target",
            id="metric-target-infinite",
        ),
        pytest.param(
            JOB,
            {"spec.worker.resources.requests.cpu": "\u0663"},  # ARABIC-INDIC DIGIT THREE
            "spec.worker.resources.requests.cpu",
            id="quantity-non-ascii-digit",
        ),
    ],
)
def test_invalid_manifest_is_rejected_naming_the_field(
    base: dict[str, Any], changes: Changes, field: str
) -> None:
    problems = problems_of(changed(base, changes))
    assert any(p.startswith(field) for p in problems), problems


def test_independent_field_problems_are_reported_together() -> None:
    doc = changed(
        JOB,
        {
            "spec.replicas": 0,
            "spec.training.steps": 0,
            "spec.training.precision": "fp8",
            "spec.trainig": {},
            "spec.checkpoint.path": DELETE,
        },
    )
    assert sorted(problems_of(doc)) == sorted(
        [
            "spec.replicas: must be >= 1 (got 0)",
            "spec.training.steps: must be >= 1 (got 0)",
            "spec.training.precision: must be one of 'auto', 'fp32', 'bf16' or 'fp16' (got 'fp8')",
            "spec.checkpoint.path: is required",
            "spec.trainig: unknown field, check its spelling" + _HINT_JOB,
        ]
    )


def test_every_broken_cross_field_rule_is_reported() -> None:
    doc = changed(
        JOB,
        {
            "spec.replicas": 5,
            "spec.training.warmupSteps": 400,
            "spec.training.globalBatchSize": 22,
            "spec.data.tokenizer.vocabSize": 1000,
        },
    )
    assert problems_of(doc) == [
        "spec.elastic.maxReplicas (3) must be >= spec.replicas (5)",
        "spec.training.globalBatchSize (22) must be a multiple of spec.training.microBatchSize (4)",
        "spec.training.warmupSteps (400) must be < spec.training.steps (300)",
        "spec.data.tokenizer.vocabSize applies to type BPE only: remove it or set type: BPE",
    ]


def test_service_cross_field_rules_are_reported_together() -> None:
    doc = changed(
        SERVICE,
        {
            "spec.model.checkpoint": {"path": "ckpt"},
            "spec.serving.maxQueue": 4,
            "spec.autoscaling.source": "Prometheus",
        },
    )
    assert problems_of(doc) == [
        "spec.model must set exactly one of fromTrainingJob, checkpoint, hf",
        "spec.serving.maxQueue (4) must be >= spec.serving.maxBatchSize (8)",
        "spec.autoscaling.source Prometheus needs spec.autoscaling.prometheus.url",
    ]


def test_problems_in_metadata_and_in_separate_sub_objects_are_reported_together() -> None:
    # Like the API server, every rule at every level is checked and reported at once.
    doc = changed(
        JOB,
        {
            "metadata.name": "Tiny",
            "spec.replicas": 9,
            "spec.data.path": "../corpus.txt",
            "spec.worker.env": [{"name": "A", "valueFrom": {}}],
        },
    )
    assert sorted(problems_of(doc)) == sorted(
        [
            f"metadata.name (Tiny) {_NAME_RULE}",
            "spec.elastic.maxReplicas (3) must be >= spec.replicas (9)",
            "spec.data.path: must not contain '..' segments (got '../corpus.txt')",
            "spec.worker.env[0].valueFrom: must set exactly one of secretKeyRef,"
            " configMapKeyRef, fieldRef",
        ]
    )


def test_field_errors_are_reported_before_cross_field_rules() -> None:
    # Rules compare values, so they are checked once every field has the right type.
    doc = changed(JOB, {"spec.replicas": 9, "spec.worker.image": 3})
    assert problems_of(doc) == ["spec.worker.image: must be a string (got 3)"]
