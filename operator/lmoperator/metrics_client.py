"""Reading a training worker's Prometheus metrics: the parser is pure, the scrape is one GET.

The worker serves them at http://<podIP>:9400/metrics (lmworker.config.METRICS_PORT);
rank 0's figures become the job's status.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from lmworker.config import METRICS_PORT

# The worker's metric names (the contract with lmworker).
STEP = "elasticlm_train_step"
LOSS = "elasticlm_train_loss"
TOKENS_PER_SECOND = "elasticlm_train_tokens_per_second"
STEP_SECONDS = "elasticlm_train_step_seconds"
WORLD_SIZE = "elasticlm_train_world_size"
RANK = "elasticlm_train_rank"
ROUND = "elasticlm_train_round"
TARGET_STEPS = "elasticlm_train_target_steps"
LAST_CHECKPOINT_STEP = "elasticlm_train_last_checkpoint_step"
LAST_CHECKPOINT_TIME = "elasticlm_train_last_checkpoint_timestamp_seconds"
CHECKPOINT_SECONDS = "elasticlm_train_checkpoint_seconds"
GROUP_FAILURES = "elasticlm_train_group_failures_total"

SCRAPE_TIMEOUT_SECONDS = 1.0
MAX_SCRAPE_BYTES = 1 << 20


@dataclass(frozen=True)
class WorkerMetrics:
    """One scrape of a worker; None where the worker did not report the figure."""

    step: int | None = None
    loss: float | None = None
    tokens_per_second: float | None = None
    step_seconds: float | None = None
    world_size: int | None = None
    rank: int | None = None
    round: int | None = None
    target_steps: int | None = None
    last_checkpoint_step: int | None = None
    last_checkpoint_time: float | None = None
    checkpoint_seconds: float | None = None
    group_failures: int | None = None


def _values(text: str) -> dict[str, float]:
    """The first finite sample of each metric family (histograms: their _sum/_count)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # A gauge's sample carries the family name; a counter's has `_total`; a
            # histogram or summary is read as its mean (sum / count) below.
            if sample.name not in values and math.isfinite(sample.value):
                values[sample.name] = float(sample.value)
    for name in list(values):
        if name.endswith("_sum"):
            base = name[: -len("_sum")]
            count = values.get(f"{base}_count")
            if count and base not in values:
                values[base] = values[name] / count
    return values


def parse_worker_metrics(text: str) -> WorkerMetrics:
    """The figures the operator uses from a worker's /metrics text.

    Raises ValueError when the text is not the Prometheus exposition format.
    """
    values = _values(text)

    def integer(name: str) -> int | None:
        value = values.get(name)
        return int(value) if value is not None else None

    return WorkerMetrics(
        step=integer(STEP),
        loss=values.get(LOSS),
        tokens_per_second=values.get(TOKENS_PER_SECOND),
        step_seconds=values.get(STEP_SECONDS),
        world_size=integer(WORLD_SIZE),
        rank=integer(RANK),
        round=integer(ROUND),
        target_steps=integer(TARGET_STEPS),
        last_checkpoint_step=integer(LAST_CHECKPOINT_STEP),
        last_checkpoint_time=values.get(LAST_CHECKPOINT_TIME),
        checkpoint_seconds=values.get(CHECKPOINT_SECONDS),
        group_failures=integer(GROUP_FAILURES),
    )


def scrape_worker(
    pod_ip: str, port: int = METRICS_PORT, timeout: float = SCRAPE_TIMEOUT_SECONDS
) -> WorkerMetrics | None:
    """One worker's metrics, or None when it cannot be reached or answers nonsense."""
    url = f"http://{pod_ip}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(MAX_SCRAPE_BYTES).decode("utf-8", errors="replace")
        return parse_worker_metrics(text)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def rank0_metrics(pod_ips: Iterable[str]) -> WorkerMetrics | None:
    """The metrics of the first worker (in the given order) that reports rank 0."""
    for ip in pod_ips:
        metrics = scrape_worker(ip)
        if metrics is not None and metrics.rank == 0:
            return metrics
    return None
