"""What the operator hands a worker pod: the contract between lmoperator and lmworker.

The operator resolves the LMTrainingJob spec (presets, defaults, mount paths) into one
`WorkerConfig`, serialises it to JSON in the `ELASTICLM_CONFIG` environment variable of
every worker pod, and the worker reads it back. Paths are container paths; devcluster
rewrites mount paths on whole path tokens, JSON strings included.

This module must stay importable without torch: the operator imports it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

CONFIG_ENV = "ELASTICLM_CONFIG"
# The rendezvous Service's address ("host:port"); the worker's pod IP; its index.
RDZV_ENV = "ELASTICLM_RDZV_ADDR"
POD_IP_ENV = "POD_IP"
INDEX_ENV = "ELASTICLM_INDEX"
# spec.replicas when the pod was created: the world size the rendezvous waits for.
EXPECTED_REPLICAS_ENV = "ELASTICLM_EXPECTED_REPLICAS"
# "1" in a warm spare's pod (spec.elastic.warmSpares): it loads everything and registers
# with the rendezvous as standby, outside the world, until the operator promotes it with
# an authenticated POST to PROMOTE_PATH on its metrics port.
SPARE_ENV = "ELASTICLM_SPARE"
PROMOTE_PATH = "/promote"

# The file holding the job's rendezvous secret (the mounted Secret <job>-rdzv-auth);
# the store refuses clients that cannot prove they hold it (lmworker.storeauth).
SECRET_FILE_ENV = "ELASTICLM_RDZV_SECRET_FILE"
SECRET_KEY = "token"
SECRET_MOUNT = "/var/run/elasticlm/rdzv"

RDZV_PORT = 29400
METRICS_PORT = 9400
TERMINATION_LOG = "/dev/termination-log"
# Where the worker writes its termination message (the operator sets TERMINATION_LOG).
TERMINATION_LOG_ENV = "ELASTICLM_TERMINATION_LOG"
# torch intra-op threads; the operator derives it from the pod's CPU request.
THREADS_ENV = "ELASTICLM_THREADS"
# A pod of several training processes (see lmworker.pod): each process's local rank,
# their number, and an id they share; the pod's main process sets them.
LOCAL_RANK_ENV = "LOCAL_RANK"
LOCAL_WORLD_SIZE_ENV = "LOCAL_WORLD_SIZE"
POD_GROUP_ENV = "ELASTICLM_POD_GROUP"

# Worker exit codes. 0: training reached its steps, or the worker left a shrinking
# group cleanly. PERMANENT: a problem restarting cannot fix (bad data path, bad config);
# its termination message says what. Anything else (a crash, SIGKILL) is retryable.
EXIT_PERMANENT = 3


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-shaped decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention)."""

    vocab_size: int
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int
    context_length: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True


def default_intermediate_size(hidden_size: int) -> int:
    """About 8/3 of the width, rounded up to a multiple of 32 (as Llama does, to 256)."""
    raw = (8 * hidden_size) // 3
    return ((raw + 31) // 32) * 32


@dataclass(frozen=True)
class TrainingConfig:
    steps: int
    global_batch_size: int
    micro_batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    precision: str  # fp32 | bf16 | fp16 | auto (lmworker.precision decides)
    sync: str  # DDP | LocalSGD
    local_sgd_sync_steps: int
    seed: int
    # Tokens per training sequence; None: the model's context length. A pretrained model's
    # context (SmolLM2: 8192) is usually far more than fine-tuning on a CPU can afford.
    sequence_length: int | None = None


@dataclass(frozen=True)
class WorkerConfig:
    job: str
    namespace: str
    model: ModelConfig
    training: TrainingConfig
    # A text file, or a directory whose *.txt files are read in name order.
    data_path: str
    tokenizer: str = "Bytes"  # Bytes | BPE
    bpe_vocab_size: int = 4096
    tokenizer_path: str | None = None
    validation_fraction: float = 0.0
    # A Hugging Face Llama directory to start from instead of random weights.
    init_from_hf: str | None = None
    # Checkpoints; None disables them (and the final export).
    checkpoint_dir: str | None = None
    checkpoint_interval_steps: int = 100
    checkpoint_async: bool = False
    checkpoint_keep: int = 3
    min_replicas: int = 1
    max_replicas: int = 1
    # Training processes in each worker pod (one per GPU); the world size is
    # pods x processes (see lmworker.pod).
    processes_per_pod: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        raw = json.loads(text)
        raw["model"] = ModelConfig(**raw["model"])
        raw["training"] = TrainingConfig(**raw["training"])
        return cls(**raw)
