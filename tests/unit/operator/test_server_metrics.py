"""Parsing what a server pod reports: its load (/metrics) and readiness (/readyz)."""

from __future__ import annotations

import json

import pytest

from lmoperator.server_metrics import parse_in_flight, parse_readiness, parse_server_load


def test_in_flight_is_running_plus_waiting() -> None:
    text = (
        "# TYPE elasticlm_serve_running gauge\nelasticlm_serve_running 3\n"
        "# TYPE elasticlm_serve_waiting gauge\nelasticlm_serve_waiting 2\n"
    )
    assert parse_in_flight(text) == 5


def test_in_flight_unknown_when_the_server_does_not_say() -> None:
    assert parse_in_flight("other_metric 1\n") is None


def test_in_flight_rejects_what_is_not_prometheus_text() -> None:
    with pytest.raises(ValueError, match="not a Prometheus sample"):
        parse_in_flight("<html>oops</html>")


def test_readiness_of_a_refused_model_carries_the_servers_message() -> None:
    body = {
        "ready": False,
        "state": "refused",
        "message": "perplexity rose 7.3% above maxPerplexityIncrease 5%",
        "model": {"precision": "bf16 (native on this CPU)", "perplexityBefore": 12.1},
    }
    r = parse_readiness(json.dumps(body))
    assert (r.ready, r.state) == (False, "refused")
    assert "7.3%" in r.message
    assert r.precision == "bf16 (native on this CPU)"
    assert r.perplexity_before == 12.1
    assert r.perplexity_after is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[]", "no boolean 'ready'"),
        ('{"ready": "yes"}', "no boolean 'ready'"),
        ("nope", "Expecting value"),
    ],
)
def test_readiness_rejects_other_answers(body: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_readiness(body)


def test_server_load_reads_the_gauges_the_autoscaler_uses() -> None:
    text = (
        "elasticlm_serve_running 3\nelasticlm_serve_waiting 2\n"
        "elasticlm_serve_kv_slots_in_use 3\nelasticlm_serve_kv_slots 8\n"
    )
    load = parse_server_load(text)
    assert (load.in_flight, load.waiting, load.kv_cache_usage) == (5, 2, 3 / 8)


def test_server_load_without_slots_has_no_kv_cache_usage() -> None:
    load = parse_server_load("elasticlm_serve_running 1\nelasticlm_serve_kv_slots 0\n")
    assert load.kv_cache_usage is None
    assert load.waiting is None
