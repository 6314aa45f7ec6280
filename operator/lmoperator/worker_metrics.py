"""A training worker's Prometheus metrics, parsed (pure; `scrape.py` fetches them).

The worker serves them at http://<podIP>:9400/metrics (lmworker.config.METRICS_PORT);
rank 0's figures become the job's status.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# The worker's metric names (the contract with lmworker).
STEP = "elasticlm_train_step"
LOSS = "elasticlm_train_loss"
VALIDATION_LOSS = "elasticlm_train_validation_loss"
VALIDATION_STEP = "elasticlm_train_validation_step"
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
REFORM_SECONDS = "elasticlm_train_reform_seconds"
INITIAL_VALIDATION_LOSS = "elasticlm_train_initial_validation_loss"
# An info metric: {requested, precision, reason} labels on a sample of value 1.
PRECISION_INFO = "elasticlm_train_precision_info"


@dataclass(frozen=True)
class WorkerMetrics:
    """One scrape of a worker; None where the worker did not report the figure."""

    step: int | None = None
    loss: float | None = None
    validation_loss: float | None = None
    validation_step: int | None = None
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
    reform_seconds: float | None = None  # the latest round's forming and state hand-over
    initial_validation_loss: float | None = None
    # (requested, chosen, reason) from the precision info metric.
    precision: tuple[str, str, str] | None = None


# One sample line of the text exposition format: name, optional {labels}, value,
# optional timestamp. Label values may hold any character, so the labels run to the
# last closing brace of the line.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?[ \t]+(\S+)(?:[ \t]+-?[0-9]+)?[ \t]*")


def sample_values(text: str) -> dict[str, float]:
    """The first finite sample of each metric (histograms: read as their _sum/_count).

    A line parser rather than prometheus_client's: the operator reads a dozen figures
    from every running job's rank 0 every few seconds, and the full parser costs
    milliseconds per scrape.
    """
    values: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sample = _SAMPLE.fullmatch(line)
        if sample is None:
            raise ValueError(f"line {number} is not a Prometheus sample: {line[:80]!r}")
        name, raw = sample.group(1), sample.group(3)
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"line {number}: {raw[:40]!r} is not a number") from None
        if name not in values and math.isfinite(value):
            values[name] = value
    for name in list(values):
        if name.endswith("_sum"):
            base = name[: -len("_sum")]
            count = values.get(f"{base}_count")
            if count and base not in values:
                values[base] = values[name] / count
    return values


_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def sample_labels(text: str, metric: str) -> dict[str, str] | None:
    """The labels of the first sample of `metric` (escapes undone), or None without one."""
    for line in text.splitlines():
        sample = _SAMPLE.fullmatch(line.strip())
        if sample is None or sample.group(1) != metric:
            continue
        body = (sample.group(2) or "{}")[1:-1]
        labels: dict[str, str] = {}
        position = 0
        while position < len(body):
            found = _LABEL.match(body, position)
            if found is None:
                raise ValueError(f'{metric}: labels {body[:80]!r} are not name="value" pairs')
            value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], found.group(2))
            labels[found.group(1)] = value
            position = found.end()
        return labels
    return None


def _precision(text: str) -> tuple[str, str, str] | None:
    labels = sample_labels(text, PRECISION_INFO)
    if labels is None or "precision" not in labels:
        return None
    return labels.get("requested", ""), labels["precision"], labels.get("reason", "")


def parse_worker_metrics(text: str) -> WorkerMetrics:
    """The figures the operator uses from a worker's /metrics text.

    Raises ValueError when the text is not the Prometheus exposition format.
    """
    values = sample_values(text)
    # A gauge reads 0 before it is first set: the validation loss counts only with the
    # step it was measured at (-1 until the first measurement).
    validation_step = values.get(VALIDATION_STEP)
    if validation_step is None or validation_step < 0:
        values.pop(VALIDATION_STEP, None)
        values.pop(VALIDATION_LOSS, None)

    def integer(name: str) -> int | None:
        value = values.get(name)
        return int(value) if value is not None else None

    return WorkerMetrics(
        step=integer(STEP),
        loss=values.get(LOSS),
        validation_loss=values.get(VALIDATION_LOSS),
        validation_step=integer(VALIDATION_STEP),
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
        reform_seconds=values.get(REFORM_SECONDS),
        initial_validation_loss=values.get(INITIAL_VALIDATION_LOSS),
        precision=_precision(text),
    )
