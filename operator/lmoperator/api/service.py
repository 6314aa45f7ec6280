"""LMService: an autoscaled, OpenAI-compatible server for a trained model."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from lmoperator.api.base import (
    CRON_PATTERN,
    DNS_LABEL_PATTERN,
    HTTP_URL_PATTERN,
    ApiModel,
    CelRule,
    nested,
    unique_by,
)
from lmoperator.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    MAX_SCALING_HISTORY,
    Condition,
    ObjectMeta,
    ScalingDecision,
    SecretKeySelector,
    StorageLocation,
    WorkerSpec,
)


class TrainingJobRef(ApiModel):
    """A checkpoint of an LMTrainingJob in the same namespace."""

    name: str = Field(max_length=253, pattern=DNS_LABEL_PATTERN, description="LMTrainingJob name.")
    step: int | None = Field(
        None, ge=0, description="Checkpoint step to serve; defaults to the newest."
    )


class ServiceModel(ApiModel):
    """The model to serve: exactly one of fromTrainingJob, checkpoint or hf."""

    from_training_job: TrainingJobRef | None = Field(
        None, description="The final (or a chosen) checkpoint of an LMTrainingJob."
    )
    checkpoint: StorageLocation | None = Field(
        None, description="A checkpoint directory written by an LMTrainingJob."
    )
    hf: StorageLocation | None = Field(
        None, description="A Hugging Face Llama model directory (config.json + safetensors)."
    )


class Quantization(enum.StrEnum):
    NONE = "none"
    INT8 = "int8"


class ServingPrecision(enum.StrEnum):
    """The dtype of the computation; `auto` is bf16 where the hardware runs it natively."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Runtime(enum.StrEnum):
    BUILTIN = "Builtin"
    VLLM = "VLLM"


class PruningMethod(enum.StrEnum):
    MAGNITUDE = "Magnitude"
    STRUCTURED = "Structured"


class Pruning(ApiModel):
    """Weight pruning applied when the model loads."""

    amount: float = Field(
        ge=0,
        lt=1,
        description="Fraction to remove: of each decoder linear layer's weights (Magnitude) "
        "or of each MLP's intermediate channels (Structured).",
    )
    method: PruningMethod = Field(
        PruningMethod.MAGNITUDE,
        description="Magnitude (zero the smallest individual weights) or Structured (remove "
        "the MLP channels whose output has the smallest L2 norm on calibration text, so "
        "the matmuls shrink).",
    )


class Compression(ApiModel):
    """Compression applied at load time, guarded by a perplexity budget."""

    quantization: Quantization = Field(
        Quantization.NONE,
        description="none or int8 (int8 weights and per-token int8 activations in every linear "
        "layer; CPU only; computes in fp32, so spec.precision must be auto or fp32).",
    )
    pruning: Pruning | None = Field(None, description="Weight pruning.")
    max_perplexity_increase: float = Field(
        0.05,
        ge=0,
        le=10,
        description="Largest relative perplexity increase accepted on held-out text "
        "(0.05 = 5%), compressed and in spec.precision against the fp32 model; beyond "
        "it the server refuses to become ready.",
    )


class ServingSpec(ApiModel):
    """The HTTP server and its batching scheduler."""

    port: int = Field(8000, ge=1024, le=65535, description="Container port of the HTTP API.")
    max_batch_size: int = Field(
        8, ge=1, le=4096, description="Sequences decoded together in one forward pass."
    )
    max_batch_delay_ms: int = Field(
        10, ge=0, le=10000, description="How long a request may wait for others to batch with."
    )
    max_queue: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="Requests waiting beyond this answer 429 Too Many Requests.",
    )
    max_new_tokens: int = Field(
        256, ge=1, le=1_000_000, description="Upper bound on tokens generated per request."
    )
    auth_secret_ref: SecretKeySelector | None = Field(
        None,
        description="A Secret key holding the bearer token clients must send; unset means "
        "no authentication.",
    )


class MetricType(enum.StrEnum):
    IN_FLIGHT_REQUESTS = "InFlightRequests"
    QUEUE_DEPTH = "QueueDepth"
    REQUESTS_PER_SECOND = "RequestsPerSecond"
    TOKENS_PER_SECOND = "TokensPerSecond"
    LATENCY_P95 = "LatencyP95"


class AutoscalingMetric(ApiModel):
    """A per-replica target for one metric; the largest recommendation wins."""

    type: MetricType = Field(description="What to measure.")
    target: float = Field(
        gt=0,
        description="Desired average value per replica (seconds for LatencyP95).",
    )
    query: str | None = Field(
        None,
        max_length=4096,
        description="For source Prometheus: PromQL returning the fleet-wide value (a scalar "
        "or one series; the total for InFlightRequests, QueueDepth, RequestsPerSecond and "
        "TokensPerSecond, the average for LatencyP95) or one series per server pod with a "
        "`pod` label; defaults to a query of the server's own metric by the namespace and pod "
        "labels.",
    )


class ScaleUpRules(ApiModel):
    """Limits on scaling up (defaults as in the Knative KPA: fast)."""

    max_rate: float = Field(
        1000,
        gt=1,
        le=1000,
        description="Most the replica count may grow by in one decision, as a factor.",
    )
    stabilization_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="Scale up to the lowest recommendation seen over this window.",
    )


class ScaleDownRules(ApiModel):
    """Limits on scaling down (defaults as in the HPA: cautious)."""

    max_rate: float = Field(
        2,
        gt=1,
        le=1000,
        description="Most the replica count may shrink by in one decision, as a factor "
        "(2 = at most halve).",
    )
    stabilization_seconds: int = Field(
        300,
        ge=0,
        le=3600,
        description="Scale down to the highest recommendation seen over this window.",
    )


class PredictiveScaling(ApiModel):
    """A forecast term added to the reactive recommendation."""

    enabled: bool = Field(False, description="Whether to add the forecast.")
    lookback_seconds: int = Field(
        3600, ge=60, le=604800, description="History used to fit the forecast."
    )
    horizon_seconds: int = Field(
        120, ge=0, le=3600, description="How far ahead to provision (about a pod's start-up)."
    )


class ScalingSchedule(ApiModel):
    """A floor on replicas during a recurring time window."""

    name: str = Field(max_length=63, pattern=DNS_LABEL_PATTERN, description="Schedule name.")
    cron: str = Field(
        max_length=256,
        pattern=CRON_PATTERN,
        description="Five-field cron expression of the window's start, e.g. '0 8 * * 1-5'.",
    )
    duration_seconds: int = Field(ge=60, le=604800, description="Length of the window.")
    min_replicas: int = Field(ge=1, le=10000, description="Replicas at least, inside the window.")
    time_zone: str = Field(
        "UTC", max_length=64, description="IANA time zone of the cron expression."
    )


class MetricsSource(enum.StrEnum):
    PODS = "Pods"
    PROMETHEUS = "Prometheus"


class PrometheusSource(ApiModel):
    """The Prometheus server to query."""

    url: str = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the Prometheus HTTP API, without /api/v1/query, e.g. "
        "http://prometheus.monitoring:9090.",
    )


def _default_metrics() -> list[AutoscalingMetric]:
    return [AutoscalingMetric(type=MetricType.IN_FLIGHT_REQUESTS, target=4)]


class ServiceAutoscaling(ApiModel):
    """Metrics-driven scaling, in the manner of the Knative KPA and the HPA."""

    min_replicas: int = Field(1, ge=1, le=10000, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=10000, description="Most replicas.")
    metrics: Annotated[list[AutoscalingMetric], unique_by("type")] = Field(
        default_factory=_default_metrics,
        min_length=1,
        max_length=8,
        description="Targets; defaults to 4 in-flight requests per replica.",
        json_schema_extra={
            "default": [{"type": "InFlightRequests", "target": 4}],
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    stable_window_seconds: int = Field(
        60, ge=6, le=3600, description="Window over which metrics are averaged."
    )
    panic_window_seconds: int = Field(
        6, ge=1, le=3600, description="Short window that detects bursts."
    )
    panic_threshold: float = Field(
        2.0,
        gt=1,
        le=100,
        description="Enter panic mode (scale up at once, never down) when the panic-window "
        "demand reaches this multiple of current capacity.",
    )
    tolerance: float = Field(
        0.1, ge=0, lt=1, description="Ignore changes smaller than this fraction."
    )
    scale_up: ScaleUpRules = nested(ScaleUpRules, "Limits on scaling up.")
    scale_down: ScaleDownRules = nested(ScaleDownRules, "Limits on scaling down.")
    predictive: PredictiveScaling | None = Field(None, description="Forecast-based scaling.")
    schedules: Annotated[list[ScalingSchedule] | None, unique_by("name")] = Field(
        None,
        max_length=16,
        description="Replica floors for recurring windows.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    source: MetricsSource = Field(
        MetricsSource.PODS,
        description="Pods (scrape the servers' /metrics directly) or Prometheus.",
    )
    prometheus: PrometheusSource | None = Field(None, description="For source Prometheus.")


def _model_sources(s: LMServiceSpec) -> str | None:
    m = s.model
    if [m.from_training_job, m.checkpoint, m.hf].count(None) != 2:
        return "spec.model must set exactly one of fromTrainingJob, checkpoint, hf"
    return None


def _autoscaling_range(s: LMServiceSpec) -> str | None:
    a = s.autoscaling
    if a is not None and a.min_replicas > a.max_replicas:
        return (
            f"spec.autoscaling.minReplicas ({a.min_replicas}) must be <= "
            f"spec.autoscaling.maxReplicas ({a.max_replicas})"
        )
    return None


def _replicas_below_min(s: LMServiceSpec) -> str | None:
    a = s.autoscaling
    if a is not None and s.replicas < a.min_replicas:
        return (
            f"spec.replicas ({s.replicas})"
            f" must be >= spec.autoscaling.minReplicas ({a.min_replicas})"
        )
    return None


def _replicas_above_max(s: LMServiceSpec) -> str | None:
    a = s.autoscaling
    if a is not None and s.replicas > a.max_replicas:
        return (
            f"spec.autoscaling.maxReplicas ({a.max_replicas})"
            f" must be >= spec.replicas ({s.replicas})"
        )
    return None


def _queue_holds_batch(s: LMServiceSpec) -> str | None:
    v = s.serving
    if v.max_queue < v.max_batch_size:
        return (
            f"spec.serving.maxQueue ({v.max_queue}) must be >= "
            f"spec.serving.maxBatchSize ({v.max_batch_size})"
        )
    return None


def _int8_computes_in_fp32(s: LMServiceSpec) -> str | None:
    c = s.compression
    if (
        c is not None
        and c.quantization == Quantization.INT8
        and s.precision in (ServingPrecision.BF16, ServingPrecision.FP16)
    ):
        return (
            f"spec.compression.quantization int8 computes in fp32: set spec.precision to "
            f"auto or fp32 (got {s.precision.value})"
        )
    return None


def _prometheus_needs_url(s: LMServiceSpec) -> str | None:
    a = s.autoscaling
    if a is not None and a.source == MetricsSource.PROMETHEUS and a.prometheus is None:
        return "spec.autoscaling.source Prometheus needs spec.autoscaling.prometheus.url"
    return None


def _schedule_within_max(s: LMServiceSpec) -> str | None:
    a = s.autoscaling
    if a is None:
        return None
    for schedule in a.schedules or []:
        if schedule.min_replicas > a.max_replicas:
            return (
                f"spec.autoscaling.schedules {schedule.name}: minReplicas "
                f"({schedule.min_replicas}) must be <= spec.autoscaling.maxReplicas "
                f"({a.max_replicas})"
            )
    return None


class LMServiceSpec(ApiModel):
    """Desired state of an LMService."""

    replicas: int = Field(
        1,
        ge=0,
        le=10000,
        description="Desired number of server replicas (0 stops serving). The scale "
        "subresource reads and writes it; with autoscaling, the autoscaler owns it.",
    )
    model: ServiceModel = Field(description="The model to serve.")
    precision: ServingPrecision = Field(
        ServingPrecision.AUTO,
        description="dtype of the computation: auto (bf16 where the CPU or GPU supports it "
        "natively, else fp32; status.model.precision says which), fp32, bf16 or fp16.",
    )
    compression: Compression | None = Field(None, description="Load-time compression.")
    runtime: Runtime = Field(
        Runtime.BUILTIN,
        description="Builtin (ElasticLM's server) or VLLM (vLLM's OpenAI server, for GPU "
        "nodes; the image must provide it).",
    )
    serving: ServingSpec = nested(ServingSpec, "The HTTP server and batching.")
    autoscaling: ServiceAutoscaling | None = Field(
        None, description="Automatic scaling; unset means manual scaling only."
    )
    worker: WorkerSpec = nested(WorkerSpec, "How server pods are built.")

    cel_rules = [
        CelRule(
            name="model-exactly-one-source",
            rule="(has(self.model.fromTrainingJob) ? 1 : 0) + (has(self.model.checkpoint) ? 1 : 0)"
            " + (has(self.model.hf) ? 1 : 0) == 1",
            message_expression="'spec.model must set exactly one of "
            "fromTrainingJob, checkpoint, hf'",
            message="spec.model must set exactly one of fromTrainingJob, checkpoint, hf",
            check=_model_sources,
        ),
        CelRule(
            name="autoscaling-min-at-most-max",
            rule="!has(self.autoscaling) || self.autoscaling.minReplicas <= "
            "self.autoscaling.maxReplicas",
            message_expression="'spec.autoscaling.minReplicas (' + "
            "string(self.autoscaling.minReplicas) + ') must be <= spec.autoscaling.maxReplicas ('"
            " + string(self.autoscaling.maxReplicas) + ')'",
            message="spec.autoscaling.minReplicas must be <= maxReplicas",
            check=_autoscaling_range,
        ),
        CelRule(
            name="replicas-at-least-min",
            rule="!has(self.autoscaling) || self.replicas >= self.autoscaling.minReplicas",
            message_expression="'spec.replicas (' + string(self.replicas) + ') must be >= "
            "spec.autoscaling.minReplicas (' + string(self.autoscaling.minReplicas) + ')'",
            message="spec.replicas must be >= spec.autoscaling.minReplicas",
            check=_replicas_below_min,
        ),
        CelRule(
            name="replicas-at-most-max",
            rule="!has(self.autoscaling) || self.replicas <= self.autoscaling.maxReplicas",
            message_expression="'spec.autoscaling.maxReplicas (' + "
            "string(self.autoscaling.maxReplicas) + ') must be >= spec.replicas (' + "
            "string(self.replicas) + ')'",
            message="spec.autoscaling.maxReplicas must be >= spec.replicas",
            check=_replicas_above_max,
        ),
        CelRule(
            name="queue-holds-a-batch",
            rule="self.serving.maxQueue >= self.serving.maxBatchSize",
            message_expression="'spec.serving.maxQueue (' + string(self.serving.maxQueue) + "
            "') must be >= spec.serving.maxBatchSize (' + string(self.serving.maxBatchSize) + ')'",
            message="spec.serving.maxQueue must be >= maxBatchSize",
            check=_queue_holds_batch,
        ),
        CelRule(
            name="int8-computes-in-fp32",
            rule="!has(self.compression) || self.compression.quantization != 'int8' || "
            "self.precision == 'auto' || self.precision == 'fp32'",
            message_expression="'spec.compression.quantization int8 computes in fp32: set "
            "spec.precision to auto or fp32 (got ' + self.precision + ')'",
            message="spec.compression.quantization int8 needs spec.precision auto or fp32",
            check=_int8_computes_in_fp32,
        ),
        CelRule(
            name="prometheus-needs-url",
            rule="!has(self.autoscaling) || self.autoscaling.source != 'Prometheus' || "
            "has(self.autoscaling.prometheus)",
            message_expression="'spec.autoscaling.source Prometheus needs "
            "spec.autoscaling.prometheus.url'",
            message="spec.autoscaling.source Prometheus needs spec.autoscaling.prometheus.url",
            check=_prometheus_needs_url,
        ),
        CelRule(
            name="schedules-within-max",
            rule="!has(self.autoscaling) || !has(self.autoscaling.schedules) || "
            "self.autoscaling.schedules.all(s, s.minReplicas <= self.autoscaling.maxReplicas)",
            message_expression="'spec.autoscaling.schedules ' + "
            "self.autoscaling.schedules.filter(s, s.minReplicas > "
            "self.autoscaling.maxReplicas)[0].name + ': minReplicas (' + "
            "string(self.autoscaling.schedules.filter(s, s.minReplicas > "
            "self.autoscaling.maxReplicas)[0].minReplicas) + ') must be <= "
            "spec.autoscaling.maxReplicas (' + string(self.autoscaling.maxReplicas) + ')'",
            message="spec.autoscaling.schedules minReplicas must be <= maxReplicas",
            check=_schedule_within_max,
        ),
    ]


class ServicePhase(enum.StrEnum):
    PENDING = "Pending"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ServiceConditionType(enum.StrEnum):
    READY = "Ready"
    MODEL_LOADED = "ModelLoaded"
    COMPRESSED = "Compressed"
    SCALING_ACTIVE = "ScalingActive"
    DEGRADED = "Degraded"


class ServedModelStatus(ApiModel):
    """What the replicas actually serve."""

    checkpoint: str | None = Field(None, max_length=4096, description="Checkpoint path or step.")
    precision: str | None = Field(
        None, max_length=1024, description="The dtype the servers compute in, and why."
    )
    perplexity_before: float | None = Field(
        None, ge=0, description="Held-out perplexity before compression."
    )
    perplexity_after: float | None = Field(
        None, ge=0, description="Held-out perplexity after compression."
    )


class LMServiceStatus(ApiModel):
    """Observed state of an LMService, written by the operator."""

    phase: ServicePhase | None = Field(None, description="Where the service is in its lifecycle.")
    conditions: list[Condition] | None = Field(
        None, max_length=32, json_schema_extra=CONDITIONS_SCHEMA_EXTRA
    )
    observed_generation: int | None = Field(None, ge=0, description="Generation last acted on.")
    replicas: int | None = Field(None, ge=0, description="Server pods that exist.")
    ready_replicas: int | None = Field(None, ge=0, description="Server pods that are ready.")
    updated_replicas: int | None = Field(
        None, ge=0, description="Server pods of the current pod template (rollouts)."
    )
    selector: str | None = Field(None, description="Label selector of the server pods.")
    endpoint: str | None = Field(None, description="In-cluster URL of the OpenAI-compatible API.")
    model: ServedModelStatus | None = None
    last_scale_time: datetime | None = None
    scaling_history: list[ScalingDecision] | None = Field(
        None,
        max_length=MAX_SCALING_HISTORY,
        description=f"The last {MAX_SCALING_HISTORY} scaling decisions, newest last.",
    )


class LMService(ApiModel):
    """An autoscaled, OpenAI-compatible server for a language model."""

    api_version: Literal["elasticlm.io/v1alpha1"] = "elasticlm.io/v1alpha1"
    kind: Literal["LMService"] = "LMService"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LMServiceSpec
    status: LMServiceStatus | None = None
