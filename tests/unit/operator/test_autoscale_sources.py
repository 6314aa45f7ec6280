"""The autoscaler's metric sources (autoscale/sources/): Pods (rates and the latency
quantile between two scrapes) and Prometheus (the /api/v1/query answers, read from a
stand-in server that speaks the real format). Missing data is never zero load."""

from __future__ import annotations

import asyncio
import math
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lmoperator.api.service import MetricType, ServiceAutoscaling
from lmoperator.autoscale.policy import PolicyConfig, Reason, ServiceAutoscaler, Signal
from lmoperator.autoscale.sources import ProblemKind, Reading
from lmoperator.autoscale.sources import prometheus as prom
from lmoperator.autoscale.sources.pods import PodsSource, histogram_quantile
from lmoperator.scrape import Scraper
from lmoperator.server_metrics import ServerLoad, parse_server_load
from tests.prometheus_standin import PrometheusStandIn

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
INF = math.inf


def pod(name: str) -> dict[str, Any]:
    ready = (T0 - timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": name, "creationTimestamp": ready},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready}],
        },
    }


SERVER_TEXT = """# HELP elasticlm_serve_requests_total API requests answered, by HTTP status code.
# TYPE elasticlm_serve_requests_total counter
elasticlm_serve_requests_total{{code="200"}} {ok}
elasticlm_serve_requests_total{{code="429"}} {refused}
# TYPE elasticlm_serve_running gauge
elasticlm_serve_running 2.0
# TYPE elasticlm_serve_waiting gauge
elasticlm_serve_waiting 1.0
# TYPE elasticlm_serve_generated_tokens_total counter
elasticlm_serve_generated_tokens_total {tokens}
# TYPE elasticlm_serve_time_to_first_token_seconds histogram
elasticlm_serve_time_to_first_token_seconds_bucket{{le="0.1"}} {b1}
elasticlm_serve_time_to_first_token_seconds_bucket{{le="1.0"}} {b2}
elasticlm_serve_time_to_first_token_seconds_bucket{{le="+Inf"}} {b3}
elasticlm_serve_time_to_first_token_seconds_sum 1.0
elasticlm_serve_time_to_first_token_seconds_count {b3}
"""


def server_text(ok: int, refused: int, tokens: int, b1: int, b2: int, b3: int) -> str:
    return SERVER_TEXT.format(ok=ok, refused=refused, tokens=tokens, b1=b1, b2=b2, b3=b3)


# -- Pods ----------------------------------------------------------------------------


def test_server_text_is_read_with_prometheus_clients_parser() -> None:
    load = parse_server_load(server_text(10, 2, 500, 1, 3, 4))
    assert (load.in_flight, load.requests_total, load.generated_tokens_total) == (3, 12, 500)
    assert load.ttft_buckets == ((0.1, 1), (1.0, 3), (INF, 4))


def test_rates_and_latency_come_from_two_scrapes_and_the_first_has_none() -> None:
    source = PodsSource()
    t = T0.timestamp()
    first = parse_server_load(server_text(10, 0, 100, 0, 0, 0))
    reading = source.read([pod("a")], {"a": first}, t)
    (a,) = reading.reports
    # The gauges are there at once; a rate needs a second scrape: missing, not zero.
    assert a.values[Signal.IN_FLIGHT_REQUESTS] == 3
    assert Signal.REQUESTS_PER_SECOND not in a.values
    assert Signal.LATENCY_P95 not in a.values
    second = parse_server_load(server_text(30, 10, 600, 10, 20, 20))
    (a,) = source.read([pod("a")], {"a": second}, t + 5).reports
    assert a.values[Signal.REQUESTS_PER_SECOND] == pytest.approx(30 / 5)
    assert a.values[Signal.TOKENS_PER_SECOND] == pytest.approx(500 / 5)
    # 20 first tokens: rank 19 lies in (0.1, 1.0] holding 10 of them, the 9th of those.
    assert a.values[Signal.LATENCY_P95] == pytest.approx(0.1 + 0.9 * 9 / 10)
    # The same scrape read again gives the same rates (not a zero interval).
    (again,) = source.read([pod("a")], {"a": second}, t + 5).reports
    assert again.values == a.values


def test_a_restarted_server_counts_from_zero_and_an_idle_interval_has_no_latency() -> None:
    source = PodsSource()
    t = T0.timestamp()
    source.read([pod("a")], {"a": parse_server_load(server_text(100, 0, 900, 5, 9, 9))}, t)
    restarted = parse_server_load(server_text(4, 0, 40, 0, 0, 0))
    (a,) = source.read([pod("a")], {"a": restarted}, t + 4).reports
    assert a.values[Signal.REQUESTS_PER_SECOND] == pytest.approx(1.0)
    assert a.values[Signal.TOKENS_PER_SECOND] == pytest.approx(10.0)
    # No request got its first token in the interval: latency unknown, never 0.
    assert Signal.LATENCY_P95 not in a.values


def test_histogram_quantile_as_prometheus() -> None:
    assert histogram_quantile(0.5, [(1.0, 0), (2.0, 10), (INF, 10)]) == pytest.approx(1.5)
    # In the +Inf bucket: the highest finite bound.
    assert histogram_quantile(0.95, [(1.0, 1), (INF, 10)]) == 1.0
    assert histogram_quantile(0.95, [(1.0, 0), (INF, 0)]) is None
    assert histogram_quantile(0.95, [(1.0, 3)]) is None  # no +Inf bucket


def test_a_ready_pod_that_did_not_answer_is_a_named_problem_without_a_report() -> None:
    reading = PodsSource().read(
        [pod("a"), pod("b")], {"a": ServerLoad(running=1)}, T0.timestamp(),
        frozenset({Signal.IN_FLIGHT_REQUESTS}),
    )  # fmt: skip
    reports = {r.name: r for r in reading.reports}
    assert reports["b"].scraped_at is None
    (problem,) = reading.problems
    assert problem.kind == ProblemKind.UNREACHABLE
    assert "pod b" in problem.message


def test_a_server_without_the_counter_says_so() -> None:
    reading = PodsSource().read(
        [pod("a")], {"a": ServerLoad(running=1)}, T0.timestamp(),
        frozenset({Signal.TOKENS_PER_SECOND}),
    )  # fmt: skip
    (problem,) = reading.problems
    assert (problem.signal, problem.kind) == (Signal.TOKENS_PER_SECOND, ProblemKind.EMPTY)


# -- Prometheus: answers from a stand-in server ------------------------------------------


def ask(standin: PrometheusStandIn, query: str, url: str | None = None) -> prom.Answer:
    async def go() -> prom.Answer:
        scraper = Scraper()
        try:
            return await scraper.prometheus_query(url or standin.url, query, timeout=2.0)
        finally:
            await scraper.close()

    return asyncio.run(go())


def read_one(answer: prom.Answer, pods: list[dict[str, Any]], signal: Signal) -> Reading:
    return prom.read(pods, {signal: "q"}, {signal: answer}, T0.timestamp())


def test_a_fleet_wide_vector_is_spread_over_the_ready_pods_for_a_demand_signal() -> None:
    with PrometheusStandIn() as standin:
        standin.vector("load", ({}, 9.0))
        answer = ask(standin, "load")
    assert answer.status == 200
    reading = read_one(answer, [pod("a"), pod("b"), pod("c")], Signal.IN_FLIGHT_REQUESTS)
    assert reading.problems == ()
    assert [r.values[Signal.IN_FLIGHT_REQUESTS] for r in reading.reports] == [3.0, 3.0, 3.0]
    assert all(r.scraped_at == T0.timestamp() for r in reading.reports)


def test_a_scalar_is_every_pods_value_for_a_quality_signal() -> None:
    with PrometheusStandIn() as standin:
        standin.scalar("p95", 0.75)
        answer = ask(standin, "p95")
    reading = read_one(answer, [pod("a"), pod("b")], Signal.LATENCY_P95)
    assert [r.values[Signal.LATENCY_P95] for r in reading.reports] == [0.75, 0.75]


def test_series_by_pod_go_to_their_pods_and_a_pod_without_one_is_missing() -> None:
    with PrometheusStandIn() as standin:
        standin.vector("by pod", ({"pod": "a"}, 4.0), ({"pod": "gone"}, 7.0))
        answer = ask(standin, "by pod")
    reading = read_one(answer, [pod("a"), pod("b")], Signal.QUEUE_DEPTH)
    reports = {r.name: r for r in reading.reports}
    assert reports["a"].values == {Signal.QUEUE_DEPTH: 4.0}
    assert reports["b"].scraped_at is None


@pytest.mark.parametrize(
    ("setup", "kind", "says"),
    [
        (lambda s: None, ProblemKind.EMPTY, "returned an empty result"),
        (
            lambda s: s.error("q", "bad_data", 'invalid parameter "query": 1:5: parse error'),
            ProblemKind.ERROR,
            "Prometheus answered bad_data: invalid parameter",
        ),
        (
            lambda s: s.error("q", "execution", "query processing would load too many samples"),
            ProblemKind.ERROR,
            "answered execution",
        ),
        (lambda s: s.vector("q", ({}, math.nan)), ProblemKind.NOT_A_NUMBER, "NaN"),
        (
            lambda s: s.vector("q", ({"code": "200"}, 1.0), ({"code": "500"}, 2.0)),
            ProblemKind.AMBIGUOUS,
            "sum by (pod)",
        ),
    ],
)
def test_answers_without_a_value_are_problems_and_no_report(
    setup: Any, kind: Any, says: str
) -> None:
    with PrometheusStandIn() as standin:
        setup(standin)
        answer = ask(standin, "q")
    reading = read_one(answer, [pod("a")], Signal.IN_FLIGHT_REQUESTS)
    (problem,) = reading.problems
    assert problem.kind == kind
    assert says in problem.message
    assert "'q'" in problem.message  # the query is named
    assert reading.reports[0].scraped_at is None  # no report: never zero load


def test_no_prometheus_and_another_server_are_problems() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with PrometheusStandIn() as standin:
        unreachable = ask(standin, "q", url=closed)
        wrong_path = ask(standin, "q", url=standin.url + "/api/v1/query")
    assert unreachable.status is None
    (problem,) = read_one(unreachable, [pod("a")], Signal.QUEUE_DEPTH).problems
    assert problem.kind == ProblemKind.UNREACHABLE
    (problem,) = read_one(wrong_path, [pod("a")], Signal.QUEUE_DEPTH).problems
    assert problem.kind == ProblemKind.UNPARSABLE
    assert "without /api/v1/query" in problem.message


def test_the_default_queries_select_the_services_server_pods() -> None:
    spec = ServiceAutoscaling.model_validate(
        {
            "maxReplicas": 3,
            "metrics": [
                {"type": "InFlightRequests", "target": 2},
                {"type": "LatencyP95", "target": 0.5, "query": "my_p95"},
            ],
            "source": "Prometheus",
            "prometheus": {"url": "http://prometheus:9090"},
        }
    )
    queries = prom.queries(spec, "prod", "chat-server")
    assert queries[Signal.LATENCY_P95] == "my_p95"
    assert 'namespace="prod",pod=~"chat-server-.+"' in queries[Signal.IN_FLIGHT_REQUESTS]
    for metric in MetricType:
        assert "chat-server" in prom.default_query(metric, "prod", "chat-server")


def test_high_load_from_prometheus_scales_up_and_an_empty_result_holds() -> None:
    """End to end through the policy: the stand-in's high load scales up; an empty
    result afterwards is a hold (NoMetrics), not a scale-down to the minimum."""
    spec = ServiceAutoscaling.model_validate(
        {
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [{"type": "InFlightRequests", "target": 2}],
            "stableWindowSeconds": 6,
            "scaleDown": {"stabilizationSeconds": 0},
            "source": "Prometheus",
            "prometheus": {"url": "http://unused"},
        }
    )
    autoscaler = ServiceAutoscaler(PolicyConfig.from_spec(spec))
    pods = [pod("a")]
    with PrometheusStandIn() as standin:
        standin.vector("q", ({}, 8.0))
        high = ask(standin, "q")
        standin.vector("q")
        empty = ask(standin, "q")
    t = T0.timestamp()
    d = autoscaler.decide(t, 1, read_one(high, pods, Signal.IN_FLIGHT_REQUESTS).reports)
    assert (d.desired, d.reason) == (4, Reason.METRIC_ABOVE_TARGET)
    reading = prom.read(
        pods, {Signal.IN_FLIGHT_REQUESTS: "q"}, {Signal.IN_FLIGHT_REQUESTS: empty}, t + 5
    )
    d = autoscaler.decide(t + 5, 4, reading.reports)
    assert (d.desired, d.reason) == (4, Reason.NO_METRICS)
    assert "empty result" in reading.summary()
