"""LMTrainingJob: elastic data-parallel training of a decoder-only language model."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from lmoperator.api.base import DNS_LABEL_PATTERN, ApiModel, CelRule, nested
from lmoperator.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    MAX_SCALING_HISTORY,
    Condition,
    ObjectMeta,
    ScalingDecision,
    StorageLocation,
    WorkerSpec,
    dotdot_problem,
)

# Spares beyond a handful only hold resources: each replaces one worker at a time.
MAX_WARM_SPARES = 16


class ElasticSpec(ApiModel):
    """The range of world sizes the job may run at without a full restart."""

    min_replicas: int = Field(
        1, ge=1, le=4096, description="Fewest workers the job keeps training with."
    )
    max_replicas: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Most workers the job may grow to; unset means spec.replicas "
        "(the job can shrink but not grow).",
    )
    max_restarts: int = Field(
        3,
        ge=0,
        le=1000,
        description="Restarts of the worker group (failures, not rescales) before the job fails.",
    )
    warm_spares: int = Field(
        0,
        ge=0,
        le=MAX_WARM_SPARES,
        description="Standby pods (<job>-spare-<k>) kept started, with torch imported, the "
        "data and model loaded and registered with the rendezvous, outside the world: a "
        "scale-up or the replacement of a failed worker takes one at the next step "
        "boundary instead of starting a pod, and the operator starts another. They count "
        "in status.spares, not in spec.replicas, the world size or maxReplicas, but they "
        "do use an LMTuningJob's replica budget.",
    )


class AutoscalingPolicy(enum.StrEnum):
    NONE = "None"
    THROUGHPUT = "Throughput"
    GOODPUT = "Goodput"


class TrainingAutoscaling(ApiModel):
    """Automatic elastic scaling from the job's own measured scaling curve."""

    policy: AutoscalingPolicy = Field(
        AutoscalingPolicy.NONE,
        description="None (manual scaling only), Throughput (grow towards the most tokens/s "
        "while each added worker's marginal efficiency stays >= minEfficiency) or Goodput "
        "(goodput: tokens trained per second of wall time, with the rescale downtime the "
        "workers measured (elasticlm_train_reform_seconds) counted as seconds that train "
        "nothing; a rescale is taken only if it trains more tokens than staying over the "
        "cooldown that follows it, downtime included).",
    )
    min_efficiency: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Add a worker only while the marginal scaling efficiency stays at or "
        "above this fraction (1 = perfectly linear).",
    )
    interval_seconds: int = Field(
        30, ge=5, le=86400, description="How often the autoscaler decides."
    )
    cooldown_seconds: int = Field(
        120, ge=0, le=86400, description="Minimum time between two automatic rescales."
    )
    pending_timeout_seconds: int = Field(
        60,
        ge=5,
        le=86400,
        description="A new worker pod still Pending (no node with room for its requests) "
        "after this long is removed again and the job backs off to the workers it has.",
    )
    backoff_seconds: int = Field(
        600,
        ge=0,
        le=86400,
        description="After a scale-up failed for lack of capacity (pendingTimeoutSeconds), "
        "no scale-up is tried for this long.",
    )


class ModelPreset(enum.StrEnum):
    TINY = "tiny"
    SMALL = "small"
    BASE = "base"


@dataclass(frozen=True)
class PresetSize:
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    context_length: int


# Small enough for a laptop CPU (tiny, small) or one GPU (base).
MODEL_PRESETS: dict[ModelPreset, PresetSize] = {
    ModelPreset.TINY: PresetSize(
        layers=2, hidden_size=128, heads=4, kv_heads=4, context_length=128
    ),
    ModelPreset.SMALL: PresetSize(
        layers=4, hidden_size=256, heads=8, kv_heads=4, context_length=256
    ),
    ModelPreset.BASE: PresetSize(
        layers=12, hidden_size=768, heads=12, kv_heads=4, context_length=1024
    ),
}


class ModelSize(ApiModel):
    """An explicit Llama-shaped architecture (RMSNorm, RoPE, SwiGLU)."""

    layers: int = Field(ge=1, le=256, description="Transformer blocks.")
    hidden_size: int = Field(ge=8, le=65536, description="Model width.")
    heads: int = Field(ge=1, le=1024, description="Attention heads.")
    kv_heads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Key/value heads (grouped-query attention); defaults to heads.",
    )
    intermediate_size: int | None = Field(
        None,
        ge=8,
        le=262144,
        description="SwiGLU hidden width; defaults to about 8/3 of hiddenSize.",
    )
    context_length: int = Field(
        256, ge=8, le=131072, description="Longest sequence, and the training sequence length."
    )


class TrainingModel(ApiModel):
    """The model to train: exactly one of preset, size or hf."""

    preset: ModelPreset | None = Field(None, description="A built-in size: tiny, small or base.")
    size: ModelSize | None = Field(None, description="An explicit architecture.")
    hf: StorageLocation | None = Field(
        None,
        description="A Hugging Face Llama model directory (config.json + safetensors) "
        "to continue training from.",
    )


class TokenizerType(enum.StrEnum):
    BYTES = "Bytes"
    BPE = "BPE"


class Tokenizer(ApiModel):
    """How text becomes tokens."""

    type: TokenizerType = Field(
        TokenizerType.BPE,
        description="BPE (trained on the data with the tokenizers library) or Bytes (256 symbols).",
    )
    vocab_size: int | None = Field(
        None,
        ge=260,
        le=262144,
        description="BPE vocabulary size; defaults to 4096. Only for type BPE.",
    )
    path: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="An existing tokenizer.json to use instead of training one "
        "(inside the data location).",
    )

    cel_rules = [
        CelRule(
            name="tokenizer-path-no-dotdot",
            rule="!has(self.path) || !self.path.matches('(^|/)\\\\.\\\\.(/|$)')",
            message_expression="'must not contain \\'..\\' segments (got \\'' + self.path + '\\')'",
            message="must not contain '..' segments",
            check=lambda t: None if t.path is None else dotdot_problem(t.path),
            field_path=".path",
        )
    ]


class DataSpec(StorageLocation):
    """The training text: a UTF-8 file or a directory of .txt files."""

    tokenizer: Tokenizer = nested(Tokenizer, "How text becomes tokens.")
    validation_fraction: float = Field(
        0.01,
        ge=0,
        lt=0.5,
        description="Share of the text held out to measure validation loss.",
    )


class Precision(enum.StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class SyncMode(enum.StrEnum):
    DDP = "DDP"
    LOCAL_SGD = "LocalSGD"


class TrainingSpec(ApiModel):
    """The optimisation itself. The global batch stays constant at every world size."""

    steps: int = Field(1000, ge=1, le=100_000_000, description="Optimizer steps to train for.")
    global_batch_size: int = Field(
        32,
        ge=1,
        le=1_048_576,
        description="Sequences per optimizer step across all workers, kept constant when "
        "the job rescales (by gradient accumulation).",
    )
    micro_batch_size: int = Field(
        4, ge=1, le=65536, description="Sequences per forward/backward pass on one worker."
    )
    learning_rate: float = Field(3e-4, gt=0, le=10, description="Peak learning rate.")
    warmup_steps: int | None = Field(
        None,
        ge=0,
        description="Linear warmup before the cosine decay; defaults to 5% of steps.",
    )
    weight_decay: float = Field(0.1, ge=0, le=10, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip; 0 disables it.")
    precision: Precision = Field(
        Precision.FP32,
        description="fp32, bf16 (autocast), fp16 (autocast with loss scaling), or auto: bf16 "
        "where the hardware computes it natively (CPUs with AMX or AVX512-BF16, GPUs of "
        "compute capability 8.0+), fp16 with loss scaling on GPUs of compute capability 7.x, "
        "else fp32. status.precision says what was chosen and why.",
    )
    sync: SyncMode = Field(
        SyncMode.DDP,
        description="DDP (all-reduce every step) or LocalSGD (average the models every "
        "localSgdSyncSteps steps).",
    )
    local_sgd_sync_steps: int = Field(
        8, ge=1, le=10000, description="Steps between model averages with sync LocalSGD."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of initialisation and sampling.")
    sequence_length: int | None = Field(
        None,
        ge=8,
        le=131072,
        description="Tokens per training sequence; defaults to the model's context length "
        "(for model.hf, max_position_embeddings of its config.json). At most that length: "
        "set it to fine-tune a long-context model on short sequences.",
    )


class CheckpointSpec(StorageLocation):
    """Where and how often the job saves resumable, reshardable checkpoints."""

    interval_steps: int = Field(100, ge=1, description="Save every this many steps.")
    async_: bool = Field(
        False,
        alias="async",
        description="Save in the background while training goes on.",
    )
    keep: int = Field(3, ge=1, le=1000, description="Newest checkpoints to keep.")


class RestartPolicy(enum.StrEnum):
    ON_FAILURE = "OnFailure"
    NEVER = "Never"
    EXIT_CODE = "ExitCode"


class CleanPodPolicy(enum.StrEnum):
    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


class SchedulingPolicy(ApiModel):
    """Scheduler integration."""

    scheduler_name: str | None = Field(
        None, max_length=253, description="Scheduler of the pods, e.g. volcano."
    )
    priority_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_LABEL_PATTERN,
        description="PriorityClass of the pods.",
    )
    queue: str | None = Field(
        None, max_length=253, description="Queue name for batch schedulers (Kueue, Volcano)."
    )
    gang: bool = Field(
        False,
        description="Schedule elastic.minReplicas workers all together or not at all.",
    )


class NetworkPolicySpec(ApiModel):
    """The job's NetworkPolicy (the rendezvous secret is required either way)."""

    enabled: bool = Field(
        True,
        description="Render a NetworkPolicy that admits only the job's own pods (every "
        "port), the operator and the chart's metrics scrapers (metrics port). Set false on "
        "clusters without a NetworkPolicy engine, where it would only mislead.",
    )


class RunPolicy(ApiModel):
    """Lifecycle rules, as in Kubeflow's RunPolicy."""

    restart_policy: RestartPolicy = Field(
        RestartPolicy.ON_FAILURE,
        description="OnFailure: restart failed workers; Never: fail the job; ExitCode: "
        "restart on signals and exit codes 128 and above, fail on 1-127.",
    )
    backoff_limit: int = Field(
        6, ge=0, le=1000, description="Worker pod failures tolerated before the job fails."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job after running this long."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished job this long after it ended."
    )
    suspend: bool = Field(
        False,
        description="Remove the pods but keep the checkpoints; set back to false to resume.",
    )
    clean_pod_policy: CleanPodPolicy = Field(
        CleanPodPolicy.RUNNING,
        description="Pods to delete when the job ends: All, Running (default) or None.",
    )
    scheduling: SchedulingPolicy = nested(SchedulingPolicy, "Scheduler integration.")


def effective_max_replicas(spec: LMTrainingJobSpec) -> int:
    """The largest world size the job may reach."""
    return spec.elastic.max_replicas if spec.elastic.max_replicas is not None else spec.replicas


def _replicas_below_min(s: LMTrainingJobSpec) -> str | None:
    if s.replicas < s.elastic.min_replicas:
        return (
            f"spec.replicas ({s.replicas})"
            f" must be >= spec.elastic.minReplicas ({s.elastic.min_replicas})"
        )
    return None


def _replicas_above_max(s: LMTrainingJobSpec) -> str | None:
    if s.elastic.max_replicas is not None and s.replicas > s.elastic.max_replicas:
        return (
            f"spec.elastic.maxReplicas ({s.elastic.max_replicas})"
            f" must be >= spec.replicas ({s.replicas})"
        )
    return None


def _batch_not_multiple(s: LMTrainingJobSpec) -> str | None:
    t = s.training
    if t.global_batch_size % t.micro_batch_size:
        return (
            f"spec.training.globalBatchSize ({t.global_batch_size}) must be a multiple of "
            f"spec.training.microBatchSize ({t.micro_batch_size})"
        )
    return None


def _batch_too_small(s: LMTrainingJobSpec) -> str | None:
    t = s.training
    largest = effective_max_replicas(s)
    if t.global_batch_size // t.micro_batch_size < largest:
        return (
            f"spec.training.globalBatchSize ({t.global_batch_size}) must hold at least one "
            f"micro-batch of {t.micro_batch_size} for each of up to {largest} workers: "
            f"use {t.micro_batch_size * largest} or more"
        )
    return None


def _warmup_too_long(s: LMTrainingJobSpec) -> str | None:
    t = s.training
    if t.warmup_steps is not None and t.warmup_steps >= t.steps:
        return (
            f"spec.training.warmupSteps ({t.warmup_steps})"
            f" must be < spec.training.steps ({t.steps})"
        )
    return None


def _model_sources(s: LMTrainingJobSpec) -> str | None:
    m = s.model
    if [m.preset, m.size, m.hf].count(None) != 2:
        return "spec.model must set exactly one of preset, size, hf"
    return None


def _heads_split_width(s: LMTrainingJobSpec) -> str | None:
    z = s.model.size
    if z is not None and z.hidden_size % z.heads:
        return (
            f"spec.model.size.hiddenSize ({z.hidden_size})"
            f" must be a multiple of spec.model.size.heads ({z.heads})"
        )
    return None


def _rope_head_dim(s: LMTrainingJobSpec) -> str | None:
    z = s.model.size
    if z is not None and z.hidden_size % z.heads == 0 and (z.hidden_size // z.heads) % 2:
        return (
            f"spec.model.size.hiddenSize / spec.model.size.heads ({z.hidden_size // z.heads}) "
            "must be even for rotary position embeddings"
        )
    return None


def _kv_heads_group(s: LMTrainingJobSpec) -> str | None:
    z = s.model.size
    if z is not None and z.kv_heads is not None and z.heads % z.kv_heads:
        return (
            f"spec.model.size.heads ({z.heads})"
            f" must be a multiple of spec.model.size.kvHeads ({z.kv_heads})"
        )
    return None


def _preset_context_expr() -> str:
    """CEL: the context length of spec.model.preset (0 when it has none)."""
    expr = "0"
    for preset, size in reversed(MODEL_PRESETS.items()):
        expr = f"(self.model.preset == '{preset.value}' ? {size.context_length} : {expr})"
    return expr


_CONTEXT_EXPR = (
    "(has(self.model.size) ? self.model.size.contextLength : "
    f"has(self.model.preset) ? {_preset_context_expr()} : 0)"
)


def _model_context(s: LMTrainingJobSpec) -> int | None:
    if s.model.size is not None:
        return s.model.size.context_length
    if s.model.preset is not None:
        return MODEL_PRESETS[s.model.preset].context_length
    return None  # model.hf: only its config.json knows; the worker checks


def _sequence_beyond_context(s: LMTrainingJobSpec) -> str | None:
    length, context = s.training.sequence_length, _model_context(s)
    if length is not None and context is not None and length > context:
        return (
            f"spec.training.sequenceLength ({length}) must be <= the model's context length "
            f"({context})"
        )
    return None


def _vocab_needs_bpe(s: LMTrainingJobSpec) -> str | None:
    tok = s.data.tokenizer
    if tok.vocab_size is not None and tok.type != TokenizerType.BPE:
        return "spec.data.tokenizer.vocabSize applies to type BPE only: remove it or set type: BPE"
    return None


def _autoscaling_needs_range(s: LMTrainingJobSpec) -> str | None:
    if s.autoscaling.policy == AutoscalingPolicy.NONE:
        return None
    if s.elastic.max_replicas is None or s.elastic.max_replicas <= s.elastic.min_replicas:
        return (
            f"spec.autoscaling.policy {s.autoscaling.policy.value} needs room to scale: set "
            f"spec.elastic.maxReplicas above spec.elastic.minReplicas ({s.elastic.min_replicas})"
        )
    return None


_MAX_EXPR = "(has(self.elastic.maxReplicas) ? self.elastic.maxReplicas : self.replicas)"


class TrainingWorkerSpec(WorkerSpec):
    """How the operator builds each worker pod of a training job."""

    processes_per_pod: int = Field(
        1,
        ge=1,
        le=64,
        description="Training processes in each worker pod, e.g. one per GPU of a node "
        "with several (each trains on cuda:LOCAL_RANK). The world size is pods x "
        "processes; a pod's processes join and leave the training together, and replicas, "
        "minReplicas and maxReplicas count pods. resources are the whole pod's.",
    )


def _batch_too_small_for_processes(s: LMTrainingJobSpec) -> str | None:
    t = s.training
    procs = s.worker.processes_per_pod
    largest = effective_max_replicas(s)
    if procs > 1 and t.global_batch_size // t.micro_batch_size < largest * procs:
        return (
            f"spec.training.globalBatchSize ({t.global_batch_size}) must hold at least one "
            f"micro-batch of {t.micro_batch_size} for each of up to {largest * procs} training "
            f"processes ({largest} workers x spec.worker.processesPerPod {procs}): use "
            f"{t.micro_batch_size * largest * procs} or more"
        )
    return None


_PROCS_EXPR = "self.worker.processesPerPod"


class LMTrainingJobSpec(ApiModel):
    """Desired state of an LMTrainingJob."""

    replicas: int = Field(
        1,
        ge=1,
        le=4096,
        description="Desired number of workers (the world size). The scale subresource "
        "reads and writes it, so `kubectl scale` and autoscalers can drive it.",
    )
    elastic: ElasticSpec = nested(ElasticSpec, "World sizes the job may run at.")
    autoscaling: TrainingAutoscaling = nested(
        TrainingAutoscaling, "Automatic elastic scaling from measured throughput."
    )
    model: TrainingModel = nested(TrainingModel, "The model to train.", preset="tiny")
    data: DataSpec = Field(description="The training text.")
    training: TrainingSpec = nested(TrainingSpec, "Optimisation settings.")
    checkpoint: CheckpointSpec | None = Field(
        None,
        description="Checkpoints; without them a failure or rescale that loses every worker "
        "restarts from step 0.",
    )
    worker: TrainingWorkerSpec = nested(TrainingWorkerSpec, "How worker pods are built.")
    run_policy: RunPolicy = nested(RunPolicy, "Lifecycle rules.")
    network_policy: NetworkPolicySpec = nested(
        NetworkPolicySpec, "Who may reach the job's pods over the network."
    )

    cel_rules = [
        CelRule(
            name="replicas-at-least-min",
            rule="self.replicas >= self.elastic.minReplicas",
            message_expression="'spec.replicas (' + string(self.replicas) + ') must be >= "
            "spec.elastic.minReplicas (' + string(self.elastic.minReplicas) + ')'",
            message="spec.replicas must be >= spec.elastic.minReplicas",
            check=_replicas_below_min,
        ),
        CelRule(
            name="replicas-at-most-max",
            rule="!has(self.elastic.maxReplicas) || self.replicas <= self.elastic.maxReplicas",
            message_expression="'spec.elastic.maxReplicas (' + string(self.elastic.maxReplicas)"
            " + ') must be >= spec.replicas (' + string(self.replicas) + ')'",
            message="spec.elastic.maxReplicas must be >= spec.replicas",
            check=_replicas_above_max,
        ),
        CelRule(
            name="global-batch-multiple-of-micro",
            rule="self.training.globalBatchSize % self.training.microBatchSize == 0",
            message_expression="'spec.training.globalBatchSize (' + "
            "string(self.training.globalBatchSize) + ') must be a multiple of "
            "spec.training.microBatchSize (' + string(self.training.microBatchSize) + ')'",
            message="spec.training.globalBatchSize must be a multiple of microBatchSize",
            check=_batch_not_multiple,
        ),
        CelRule(
            name="global-batch-covers-workers",
            rule=f"self.training.globalBatchSize / self.training.microBatchSize >= {_MAX_EXPR}",
            message_expression="'spec.training.globalBatchSize (' + "
            "string(self.training.globalBatchSize) + ') must hold at least one micro-batch of '"
            " + string(self.training.microBatchSize) + ' for each of up to ' + "
            f"string({_MAX_EXPR}) + ' workers: use ' + "
            f"string(self.training.microBatchSize * {_MAX_EXPR}) + ' or more'",
            message="spec.training.globalBatchSize must hold one micro-batch per worker",
            check=_batch_too_small,
        ),
        CelRule(
            name="global-batch-covers-processes",
            rule=f"!has(self.worker) || !has({_PROCS_EXPR}) || {_PROCS_EXPR} <= 1 || "
            f"self.training.globalBatchSize / self.training.microBatchSize >= "
            f"{_MAX_EXPR} * {_PROCS_EXPR}",
            message_expression="'spec.training.globalBatchSize (' + "
            "string(self.training.globalBatchSize) + ') must hold at least one micro-batch of '"
            " + string(self.training.microBatchSize) + ' for each of up to ' + "
            f"string({_MAX_EXPR} * {_PROCS_EXPR}) + ' training processes (' + "
            f"string({_MAX_EXPR}) + ' workers x spec.worker.processesPerPod ' + "
            f"string({_PROCS_EXPR}) + '): use ' + "
            f"string(self.training.microBatchSize * {_MAX_EXPR} * {_PROCS_EXPR}) + ' or more'",
            message="spec.training.globalBatchSize must hold one micro-batch per process",
            check=_batch_too_small_for_processes,
        ),
        CelRule(
            name="warmup-shorter-than-training",
            rule="!has(self.training.warmupSteps) || self.training.warmupSteps < "
            "self.training.steps",
            message_expression="'spec.training.warmupSteps (' + "
            "string(self.training.warmupSteps) + ') must be < spec.training.steps (' + "
            "string(self.training.steps) + ')'",
            message="spec.training.warmupSteps must be < spec.training.steps",
            check=_warmup_too_long,
        ),
        CelRule(
            name="model-exactly-one-source",
            rule="(has(self.model.preset) ? 1 : 0) + (has(self.model.size) ? 1 : 0) + "
            "(has(self.model.hf) ? 1 : 0) == 1",
            message_expression="'spec.model must set exactly one of preset, size, hf'",
            message="spec.model must set exactly one of preset, size, hf",
            check=_model_sources,
        ),
        CelRule(
            name="heads-divide-hidden-size",
            rule="!has(self.model.size) || self.model.size.hiddenSize % self.model.size.heads == 0",
            message_expression="'spec.model.size.hiddenSize (' + "
            "string(self.model.size.hiddenSize) + ') must be a multiple of "
            "spec.model.size.heads (' + string(self.model.size.heads) + ')'",
            message="spec.model.size.hiddenSize must be a multiple of heads",
            check=_heads_split_width,
        ),
        CelRule(
            name="head-dim-even",
            rule="!has(self.model.size) || self.model.size.hiddenSize % self.model.size.heads != 0"
            " || (self.model.size.hiddenSize / self.model.size.heads) % 2 == 0",
            message_expression="'spec.model.size.hiddenSize / spec.model.size.heads (' + "
            "string(self.model.size.hiddenSize / self.model.size.heads) + ') must be even for "
            "rotary position embeddings'",
            message="spec.model.size head dimension must be even",
            check=_rope_head_dim,
        ),
        CelRule(
            name="kv-heads-divide-heads",
            rule="!has(self.model.size) || !has(self.model.size.kvHeads) || "
            "self.model.size.heads % self.model.size.kvHeads == 0",
            message_expression="'spec.model.size.heads (' + string(self.model.size.heads) + "
            "') must be a multiple of spec.model.size.kvHeads (' + "
            "string(self.model.size.kvHeads) + ')'",
            message="spec.model.size.heads must be a multiple of kvHeads",
            check=_kv_heads_group,
        ),
        CelRule(
            name="sequence-within-context",
            rule=f"!has(self.training.sequenceLength) || {_CONTEXT_EXPR} == 0 || "
            f"self.training.sequenceLength <= {_CONTEXT_EXPR}",
            message_expression="'spec.training.sequenceLength (' + "
            "string(self.training.sequenceLength) + ') must be <= the model\\'s context "
            f"length (' + string({_CONTEXT_EXPR}) + ')'",
            message="spec.training.sequenceLength must be <= the model's context length",
            check=_sequence_beyond_context,
        ),
        CelRule(
            name="vocab-size-only-for-bpe",
            rule="!has(self.data.tokenizer.vocabSize) || self.data.tokenizer.type == 'BPE'",
            message_expression="'spec.data.tokenizer.vocabSize applies to type BPE only: "
            "remove it or set type: BPE'",
            message="spec.data.tokenizer.vocabSize applies to type BPE only",
            check=_vocab_needs_bpe,
        ),
        CelRule(
            name="autoscaling-needs-range",
            rule="self.autoscaling.policy == 'None' || (has(self.elastic.maxReplicas) && "
            "self.elastic.maxReplicas > self.elastic.minReplicas)",
            message_expression="'spec.autoscaling.policy ' + self.autoscaling.policy + "
            "' needs room to scale: set spec.elastic.maxReplicas above "
            "spec.elastic.minReplicas (' + string(self.elastic.minReplicas) + ')'",
            message="spec.autoscaling needs spec.elastic.maxReplicas > minReplicas",
            check=_autoscaling_needs_range,
        ),
    ]


class TrainingPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SCALING = "Scaling"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TrainingConditionType(enum.StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    SCALING = "Scaling"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    SCALING_ACTIVE = "ScalingActive"


class CheckpointRecord(ApiModel):
    """The newest complete checkpoint."""

    step: int = Field(ge=0, description="Training step it holds.")
    time: datetime = Field(description="When it was completed.")
    path: str | None = Field(None, max_length=4096, description="Where it lies.")


class PrecisionStatus(ApiModel):
    """The precision training computes in, as the workers chose it."""

    requested: str = Field(max_length=16, description="spec.training.precision.")
    chosen: str = Field(max_length=16, description="fp32, bf16 or fp16.")
    reason: str = Field(max_length=1024, description="Why, from the workers' hardware.")


# Enough for any burst of failures between two passes of the operator.
MAX_COUNTED_FAILURES = 32
# Validation losses kept in status. Past this, every second older point is dropped, so the
# history still spans the whole run at half the resolution (see
# reconcile/trainingjob.py record_validation).
MAX_VALIDATION_HISTORY = 64


class ValidationPoint(ApiModel):
    """The validation loss measured at one checkpoint."""

    step: int = Field(ge=0, description="Training step at which it was measured.")
    loss: float = Field(description="Loss on the held-out text (nats per token).")


class SparesStatus(ApiModel):
    """The warm spares (spec.elastic.warmSpares): standby pods outside the world."""

    total: int = Field(ge=0, description="Spare pods that exist (not being deleted).")
    ready: int = Field(ge=0, description="Spares standing by: loaded and registered.")
    promoted: int | None = Field(
        None, ge=0, description="Spares that have become workers since the job started."
    )


class LMTrainingJobStatus(ApiModel):
    """Observed state of an LMTrainingJob, written by the operator."""

    phase: TrainingPhase | None = Field(None, description="Where the job is in its lifecycle.")
    conditions: list[Condition] | None = Field(
        None, max_length=32, json_schema_extra=CONDITIONS_SCHEMA_EXTRA
    )
    observed_generation: int | None = Field(None, ge=0, description="Generation last acted on.")
    replicas: int | None = Field(None, ge=0, description="Worker pods that exist.")
    ready_replicas: int | None = Field(None, ge=0, description="Worker pods that are ready.")
    world_size: int | None = Field(None, ge=0, description="Workers in the current training round.")
    selector: str | None = Field(None, description="Label selector of the worker pods.")
    spares: SparesStatus | None = None
    step: int | None = Field(None, ge=0, description="Optimizer steps completed.")
    loss: float | None = Field(None, description="Latest training loss.")
    validation_loss: float | None = Field(
        None,
        description="Latest loss on the held-out text (spec.data.validationFraction), "
        "measured at each checkpoint and at the end.",
    )
    validation_history: list[ValidationPoint] | None = Field(
        None,
        max_length=MAX_VALIDATION_HISTORY,
        description="(step, validation loss) at the checkpoints the operator saw, oldest "
        f"first; at most {MAX_VALIDATION_HISTORY} points: beyond that, every second older "
        "point is dropped, so the history spans the whole run. Kept after the pods are "
        "gone.",
    )
    tokens_per_second: float | None = Field(None, ge=0, description="Training throughput.")
    initial_validation_loss: float | None = Field(
        None,
        description="Loss on the held-out text before the first step (the starting "
        "weights: a pretrained model's, or random ones).",
    )
    precision: PrecisionStatus | None = None
    last_checkpoint: CheckpointRecord | None = None
    restarts: int | None = Field(None, ge=0, description="Restarts of the worker group.")
    counted_failures: list[str] | None = Field(
        None,
        max_length=MAX_COUNTED_FAILURES,
        description="UIDs of the failed worker pods already counted in restarts (the newest "
        f"{MAX_COUNTED_FAILURES}), so that the operator never counts one failure twice.",
    )
    target_replicas: int | None = Field(
        None,
        ge=0,
        description="The spec.replicas the operator last acted on; when spec.replicas "
        "changes, the rescale is recorded in scalingHistory.",
    )
    start_time: datetime | None = None
    completion_time: datetime | None = None
    scaling_history: list[ScalingDecision] | None = Field(
        None,
        max_length=MAX_SCALING_HISTORY,
        description=f"The last {MAX_SCALING_HISTORY} scaling decisions, newest last.",
    )


class LMTrainingJob(ApiModel):
    """A distributed, elastic training job for a language model."""

    api_version: Literal["elasticlm.io/v1alpha1"] = "elasticlm.io/v1alpha1"
    kind: Literal["LMTrainingJob"] = "LMTrainingJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LMTrainingJobSpec
    status: LMTrainingJobStatus | None = None
