"""The operator's own Prometheus metrics (served by `elasticlm operator --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_TOTAL = Counter(
    "elasticlm_reconcile_total",
    "Reconciliation passes, by resource kind and result (success, invalid, error).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    "elasticlm_reconcile_duration_seconds",
    "Duration of one reconciliation pass, API calls and metric scrapes included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHILDREN_CREATED = Counter(
    "elasticlm_children_created_total",
    "Child objects created, by Kubernetes kind and role (worker, rdzv).",
    ["kind", "role"],
)
CHILDREN_DELETED = Counter(
    "elasticlm_children_deleted_total",
    "Child objects deleted, by Kubernetes kind and role.",
    ["kind", "role"],
)
SCALING_ACTIONS = Counter(
    "elasticlm_scaling_actions_total",
    "Rescales decided, by direction (up, down).",
    ["direction"],
)
AUTOSCALER_DECISIONS = Counter(
    "elasticlm_autoscaler_decisions_total",
    "Autoscaler decisions (one per decision of an LMService's or LMTrainingJob's loop), by "
    "kind, direction (up, down, hold) and reason code (docs/autoscaling.md).",
    ["kind", "direction", "reason"],
)
AUTOSCALER_METRIC_PROBLEMS = Counter(
    "elasticlm_autoscaler_metric_problems_total",
    "Metrics the autoscaler could not read (one per metric and pass; read as missing, never "
    "as zero), by resource kind, source (Pods, Prometheus), metric (All: every metric of a "
    "pod) and problem (Unreachable, Error, Empty, Unparsable, NotANumber, Ambiguous).",
    ["kind", "source", "metric", "problem"],
)
LEADER = Gauge(
    "elasticlm_leader",
    "1 while this operator process leads and runs the handlers (always, without "
    "--leader-elect); 0 while it stands by.",
)
