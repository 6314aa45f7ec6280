"""Where the autoscaler's numbers come from: one module per `spec.autoscaling.source`.

Each source turns what the operator fetched (the server pods' `/metrics`, or a
Prometheus server's answers to PromQL queries) into the policy's `PodReport`s, and says
for every metric it could not read why not (a `Problem`). The fetching itself is I/O and
lives in `lmoperator.scrape`; what is here is pure, so a pass can be replayed exactly.

The rule every source keeps: a metric that is missing, stale, empty or unparsable is
*missing*, never zero load. A pod without a value for a signal is left out of that
signal (the policy then applies the HPA's missing-pod rule), a pod without any value has
no report at all (too few reports hold the current size), and each problem is named so
that `ScalingActive=False`, an Event and `elasticlm_autoscaler_metric_problems_total`
say which metric failed and how.

- `pods`: source Pods (each ready pod's `/metrics`; rates and the latency quantile from
  the counters and histogram between two scrapes).
- `prometheus`: source Prometheus (an instant query per metric against `/api/v1/query`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lmoperator.autoscale.policy import PodReport, Signal


class ProblemKind(enum.StrEnum):
    """Why a metric could not be read (a bounded label of the operator metric)."""

    UNREACHABLE = "Unreachable"  # no answer (connection refused, timeout)
    ERROR = "Error"  # an answer that says the query failed (Prometheus status: error, 4xx/5xx)
    EMPTY = "Empty"  # a well-formed answer without the value (empty result, metric absent)
    UNPARSABLE = "Unparsable"  # an answer in another format than expected
    NOT_A_NUMBER = "NotANumber"  # NaN or infinite (e.g. a quantile over no observations)
    AMBIGUOUS = "Ambiguous"  # several series where one fleet-wide value or one per pod is needed


@dataclass(frozen=True)
class Problem:
    signal: Signal | None  # None: every metric of the source (e.g. a pod did not answer)
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class Reading:
    """What one source gave one pass: a report per pod, and what it could not read."""

    reports: list[PodReport]
    problems: tuple[Problem, ...] = field(default=())

    def summary(self, limit: int = 3) -> str:
        """The problems in a sentence for a condition's message ('' when none)."""
        if not self.problems:
            return ""
        said = "; ".join(p.message for p in self.problems[:limit])
        more = len(self.problems) - limit
        return said + (f"; and {more} more" if more > 0 else "")


def seconds(value: Any) -> float | None:
    """A Kubernetes timestamp as seconds since the epoch (None: absent or malformed)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _ready_since(status: Mapping[str, Any]) -> float | None:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True":
            return seconds(c.get("lastTransitionTime"))
    return None


def pod_report(
    pod: Mapping[str, Any], values: Mapping[Signal, float], measured_at: float | None
) -> PodReport:
    """The policy's view of one pod: the facts from its body, and the signals read for
    it at `measured_at` (no values: no report, whatever the time)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready_at = _ready_since(status)
    created = seconds(meta.get("creationTimestamp"))
    return PodReport(
        name=str(meta.get("name") or ""),
        phase=str(status.get("phase") or "Pending"),
        ready=ready_at is not None,
        created_at=created if created is not None else (ready_at or 0.0),
        ready_at=ready_at,
        deleting=bool(meta.get("deletionTimestamp")),
        scraped_at=measured_at if values else None,
        values=dict(values),
    )


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Running, Ready and not being deleted: a pod the policy counts as capacity."""
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    return (
        status.get("phase") == "Running"
        and _ready_since(status) is not None
        and not meta.get("deletionTimestamp")
    )
