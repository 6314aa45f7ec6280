"""Source Prometheus: one PromQL instant query per metric against a Prometheus HTTP API.

`lmoperator.scrape` sends `GET <url>/api/v1/query?query=<PromQL>` for every metric of
`spec.autoscaling.metrics`, concurrently and with a timeout, and hands over the HTTP
status and body (`Answer`). This module holds the queries and reads the answers in
Prometheus's documented JSON format
(https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries):

    {"status": "success", "data": {"resultType": "vector",
     "result": [{"metric": {...labels}, "value": [<unix time>, "<value>"]}]}}
    {"status": "success", "data": {"resultType": "scalar", "value": [<time>, "<value>"]}}
    {"status": "error", "errorType": "bad_data", "error": "..."}  (HTTP 400, 422, 503)

What a query may return:

- one number (a scalar, or a vector of one series): the fleet-wide value. For a demand
  signal (added up over pods: InFlightRequests, QueueDepth, RequestsPerSecond,
  TokensPerSecond) it is the fleet's total and is spread evenly over the ready pods, so
  the policy's total is the query's; for a quality signal (averaged over pods:
  LatencyP95, KVCacheUsage) every ready pod gets it, so the policy's average is the
  query's.
- one series per pod, each with a `pod` label naming a server pod: each pod's own value
  (a pod without a series is missing that signal).

Anything else is a problem, never zero: an error answer, an empty result (the metric is
not scraped, or its series went stale), a NaN (e.g. `histogram_quantile` over no
requests), several series without `pod` labels, a body that is not the API's JSON, or no
answer at all. The default queries read the servers' own metrics by the `namespace` and
`pod` labels that Prometheus's Kubernetes pod discovery conventionally sets
(kube-prometheus's PodMonitor and ServiceMonitor do); `spec.autoscaling.metrics[].query`
overrides one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmoperator.api.service import MetricType, ServiceAutoscaling
from lmoperator.autoscale.policy import DEMAND_SIGNALS, Signal
from lmoperator.autoscale.sources import Problem, ProblemKind, Reading, is_ready, pod_report

QUERY_PATH = "/api/v1/query"
RATE_WINDOW = "1m"

_DEFAULT_QUERIES = {
    MetricType.IN_FLIGHT_REQUESTS: "sum(elasticlm_serve_running{SEL}) + "
    "sum(elasticlm_serve_waiting{SEL})",
    MetricType.QUEUE_DEPTH: "sum(elasticlm_serve_waiting{SEL})",
    MetricType.REQUESTS_PER_SECOND: "sum(rate(elasticlm_serve_requests_total{SEL}"
    f"[{RATE_WINDOW}]))",
    MetricType.TOKENS_PER_SECOND: "sum(rate(elasticlm_serve_generated_tokens_total{SEL}"
    f"[{RATE_WINDOW}]))",
    MetricType.LATENCY_P95: "histogram_quantile(0.95, sum by (le) (rate("
    f"elasticlm_serve_time_to_first_token_seconds_bucket{{SEL}}[{RATE_WINDOW}])))",
}


def default_query(metric: MetricType, namespace: str, deployment: str) -> str:
    """The PromQL for a metric of the servers of one Deployment (pods `<deployment>-…`)."""
    selector = f'namespace="{namespace}",pod=~"{deployment}-.+"'
    return _DEFAULT_QUERIES[metric].replace("SEL", selector)


def queries(autoscaling: ServiceAutoscaling, namespace: str, deployment: str) -> dict[Signal, str]:
    """Each configured metric's query: its own `query`, or the default one."""
    return {
        Signal(m.type.value): m.query or default_query(m.type, namespace, deployment)
        for m in autoscaling.metrics
    }


@dataclass(frozen=True)
class Answer:
    """What the Prometheus server answered one query: its HTTP status and body, or
    (status None) why no answer came."""

    status: int | None
    body: str


def _number(raw: Any) -> float | None:
    """A sample's value: Prometheus writes it as a string ("1.5", "NaN", "+Inf")."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"a sample value must be a string, not {raw!r:.40}")
    value = float(raw)
    return value if math.isfinite(value) else None


def _sample_value(pair: Any) -> float | None:
    if not isinstance(pair, list) or len(pair) != 2:
        raise ValueError(f"a sample must be [time, value], not {pair!r:.60}")
    return _number(pair[1])


@dataclass(frozen=True)
class Result:
    """A query's result: one fleet-wide value, or values by pod (exactly one is set)."""

    fleet: float | None = None
    by_pod: Mapping[str, float] | None = None


def parse_answer(signal: Signal, query: str, answer: Answer) -> Result | Problem:
    """Read one answer; a Problem names the metric, the query and what was wrong."""
    said = f"{signal} (query {query[:200]!r})"
    if answer.status is None:
        return Problem(
            signal, ProblemKind.UNREACHABLE, f"{said}: Prometheus did not answer: {answer.body}"
        )
    try:
        doc = json.loads(answer.body)
    except ValueError:
        return Problem(
            signal,
            ProblemKind.UNPARSABLE,
            f"{said}: HTTP {answer.status} with a body that is not Prometheus's JSON; "
            "check spec.autoscaling.prometheus.url (the server's base URL, without "
            f"{QUERY_PATH})",
        )
    if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
        return Problem(
            signal,
            ProblemKind.UNPARSABLE,
            f"{said}: HTTP {answer.status} with JSON that is not a Prometheus API answer",
        )
    if doc["status"] == "error" or answer.status != 200:
        kind = str(doc.get("errorType") or f"HTTP {answer.status}")
        error = str(doc.get("error") or "no error message")
        return Problem(signal, ProblemKind.ERROR, f"{said}: Prometheus answered {kind}: {error}")
    try:
        return _result(signal, said, doc.get("data"))
    except ValueError as exc:
        return Problem(signal, ProblemKind.UNPARSABLE, f"{said}: {exc}")


def _result(signal: Signal, said: str, data: Any) -> Result | Problem:
    if not isinstance(data, dict):
        raise ValueError("the answer has no data object")
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        value = _sample_value(result)
        if value is None:
            return Problem(signal, ProblemKind.NOT_A_NUMBER, f"{said} returned NaN or infinity")
        return Result(fleet=value)
    if kind != "vector":
        raise ValueError(
            f"the result is a {kind}; the query must return an instant vector or a scalar"
        )
    if not isinstance(result, list):
        raise ValueError("a vector result must be a list")
    if not result:
        return Problem(
            signal,
            ProblemKind.EMPTY,
            f"{said} returned an empty result (no such series, or they went stale); "
            "missing data is never read as zero load",
        )
    series = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
            raise ValueError(f"a vector sample must be an object with metric labels: {item!r:.60}")
        series.append((item.get("metric") or {}, _sample_value(item.get("value"))))
    if len(series) == 1 and "pod" not in series[0][0]:
        value = series[0][1]
        if value is None:
            return Problem(signal, ProblemKind.NOT_A_NUMBER, f"{said} returned NaN or infinity")
        return Result(fleet=value)
    if all("pod" in labels for labels, _ in series):
        return Result(
            by_pod={str(labels["pod"]): v for labels, v in series if v is not None},
        )
    return Problem(
        signal,
        ProblemKind.AMBIGUOUS,
        f"{said} returned {len(series)} series without a pod label; aggregate it to one "
        "fleet-wide value (e.g. sum(...)) or to one series per pod (sum by (pod) (...))",
    )


def read(
    pods: Sequence[Mapping[str, Any]],
    queried: Mapping[Signal, str],
    answers: Mapping[Signal, Answer],
    answered_at: float | None,
) -> Reading:
    """The policy's reports from the answers to one round of queries (`answered_at`:
    when they came, seconds since the epoch; None: no round yet)."""
    ready = [str(p["metadata"]["name"]) for p in pods if is_ready(p)]
    values: dict[str, dict[Signal, float]] = {name: {} for name in ready}
    problems: list[Problem] = []
    for signal, query in queried.items():
        answer = answers.get(signal)
        if answer is None:
            continue
        result = parse_answer(signal, query, answer)
        if isinstance(result, Problem):
            problems.append(result)
            continue
        if result.by_pod is not None:
            for name in ready:
                if name in result.by_pod:
                    values[name][signal] = result.by_pod[name]
            if not any(name in result.by_pod for name in ready):
                problems.append(
                    Problem(
                        signal,
                        ProblemKind.EMPTY,
                        f"{signal}: none of the query's pod labels "
                        f"({', '.join(sorted(result.by_pod)[:3])}) names a ready server pod",
                    )
                )
        elif result.fleet is not None and ready:
            share = result.fleet / len(ready) if signal in DEMAND_SIGNALS else result.fleet
            for name in ready:
                values[name][signal] = share
    reports = [pod_report(p, values.get(str(p["metadata"]["name"]), {}), answered_at) for p in pods]
    return Reading(reports, tuple(problems))
