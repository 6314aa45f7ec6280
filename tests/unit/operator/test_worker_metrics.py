"""Parsing a worker's Prometheus metrics, and scraping them over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lmoperator.scrape import Scraper
from lmoperator.worker_metrics import WorkerMetrics, parse_worker_metrics

SCRAPE = """\
# HELP elasticlm_train_step Optimizer steps completed.
# TYPE elasticlm_train_step gauge
elasticlm_train_step 120.0
# TYPE elasticlm_train_loss gauge
elasticlm_train_loss 3.25
# TYPE elasticlm_train_validation_loss gauge
elasticlm_train_validation_loss 3.5
# TYPE elasticlm_train_validation_step gauge
elasticlm_train_validation_step 100.0
# TYPE elasticlm_train_tokens_per_second gauge
elasticlm_train_tokens_per_second 4096.5
# TYPE elasticlm_train_step_seconds histogram
elasticlm_train_step_seconds_bucket{le="0.5"} 3.0
elasticlm_train_step_seconds_bucket{le="+Inf"} 4.0
elasticlm_train_step_seconds_count 4.0
elasticlm_train_step_seconds_sum 2.0
# TYPE elasticlm_train_world_size gauge
elasticlm_train_world_size 3.0
# TYPE elasticlm_train_rank gauge
elasticlm_train_rank 0.0
# TYPE elasticlm_train_round gauge
elasticlm_train_round 2.0
# TYPE elasticlm_train_target_steps gauge
elasticlm_train_target_steps 300.0
# TYPE elasticlm_train_last_checkpoint_step gauge
elasticlm_train_last_checkpoint_step 100.0
# TYPE elasticlm_train_last_checkpoint_timestamp_seconds gauge
elasticlm_train_last_checkpoint_timestamp_seconds 1.7e9
# TYPE elasticlm_train_checkpoint_seconds gauge
elasticlm_train_checkpoint_seconds 0.25
# TYPE elasticlm_train_group_failures counter
elasticlm_train_group_failures_total 1.0
# TYPE python_gc_objects_collected counter
python_gc_objects_collected_total{generation="0"} 12.0
"""


def test_parse_all_figures() -> None:
    assert parse_worker_metrics(SCRAPE) == WorkerMetrics(
        step=120,
        loss=3.25,
        validation_loss=3.5,
        validation_step=100,
        tokens_per_second=4096.5,
        step_seconds=0.5,
        world_size=3,
        rank=0,
        round=2,
        target_steps=300,
        last_checkpoint_step=100,
        last_checkpoint_time=1.7e9,
        checkpoint_seconds=0.25,
        group_failures=1,
    )


def test_missing_figures_are_none() -> None:
    metrics = parse_worker_metrics("elasticlm_train_rank 1\nelasticlm_train_loss NaN\n")
    assert metrics == WorkerMetrics(rank=1)


def test_validation_loss_counts_only_once_measured() -> None:
    """Before the first measurement the gauge reads 0 and the step -1: no figure."""
    fresh = "elasticlm_train_validation_loss 0.0\nelasticlm_train_validation_step -1.0\n"
    metrics = parse_worker_metrics(fresh)
    assert metrics.validation_loss is None
    assert metrics.validation_step is None
    without_step = parse_worker_metrics("elasticlm_train_validation_loss 0.0\n")
    assert without_step.validation_loss is None


def test_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the parser's message varies)
        parse_worker_metrics("this is { not prometheus")


class _Handler(BaseHTTPRequestHandler):
    bodies: dict[str, str] = {}

    def do_GET(self) -> None:
        host, _ = self.connection.getsockname()
        body = self.bodies[host].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def two_workers() -> Iterator[int]:
    """Two workers on two loopback addresses and one port, as pods have: rank 1 first."""
    first = HTTPServer(("127.0.0.1", 0), _Handler)
    port = first.server_address[1]
    servers = [first, HTTPServer(("127.0.0.2", port), _Handler)]
    _Handler.bodies = {
        "127.0.0.1": "elasticlm_train_rank 1\nelasticlm_train_step 5\n",
        "127.0.0.2": "elasticlm_train_rank 0\nelasticlm_train_step 7\n",
    }
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield port
    for s in servers:
        s.shutdown()
        s.server_close()


async def test_rank0_is_found_by_scraping(two_workers: int) -> None:
    scraper = Scraper(port=two_workers)
    try:
        metrics = await scraper.rank0(["127.0.0.1", "127.0.0.2"])
        assert metrics is not None
        assert metrics.step == 7
        # The first worker is rank 1: asked alone, it is not taken for rank 0.
        assert await scraper.rank0(["127.0.0.1"]) is None
        assert await scraper.rank0([]) is None
    finally:
        await scraper.close()


async def test_unreachable_worker_gives_none() -> None:
    scraper = Scraper(port=1, timeout=0.5)
    try:
        assert await scraper.worker("127.0.0.1") is None
    finally:
        await scraper.close()


def test_the_line_parser_reads_what_prometheus_client_writes() -> None:
    """Every kind of line a worker's registry writes, read as prometheus_client reads it."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    Gauge("elasticlm_train_step", "Steps.", registry=registry).set(42)
    Gauge("elasticlm_train_loss", "Loss.", registry=registry).set(float("nan"))
    failures = Counter("elasticlm_train_group_failures", "Failures.", ["reason"], registry=registry)
    failures.labels('odd } "label" value').inc(3)
    step = Histogram("elasticlm_train_step_seconds", "Step time.", registry=registry)
    for seconds in (0.1, 0.3):
        step.observe(seconds)
    text = generate_latest(registry).decode()
    expected: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in expected and sample.value == sample.value:
                expected[sample.name] = sample.value
    metrics = parse_worker_metrics(text)
    assert metrics.step == expected["elasticlm_train_step"] == 42
    assert metrics.loss is None  # NaN is no figure
    assert metrics.group_failures == expected["elasticlm_train_group_failures_total"] == 3
    assert metrics.step_seconds == pytest.approx(0.2)


def test_validation_losses_and_the_precision_info() -> None:
    reason = 'auto chose bf16: AMD "EPYC" computes bf16 natively (avx512_bf16), \\ ok'
    escaped = reason.replace("\\", "\\\\").replace('"', '\\"')
    text = (
        "elasticlm_train_initial_validation_loss 3.5\n"
        "elasticlm_train_validation_loss NaN\n"
        f'elasticlm_train_precision_info{{precision="bf16",reason="{escaped}",'
        'requested="auto"} 1.0\n'
    )
    metrics = parse_worker_metrics(text)
    assert metrics.initial_validation_loss == 3.5
    assert metrics.validation_loss is None  # NaN: not measured yet
    assert metrics.precision == ("auto", "bf16", reason)
    assert parse_worker_metrics(SCRAPE).precision is None
    with pytest.raises(ValueError, match="not name="):
        parse_worker_metrics("elasticlm_train_precision_info{precision=bf16} 1\n")


def test_the_worker_registry_round_trips() -> None:
    """What lmworker.metrics renders is what the operator reads."""
    from lmworker.metrics import TrainMetrics

    metrics = TrainMetrics()
    assert parse_worker_metrics(metrics.render().decode()).validation_loss is None
    metrics.initial_validation_loss.set(2.75)
    metrics.precision.info({"requested": "auto", "precision": "fp32", "reason": 'no "bf16"'})
    parsed = parse_worker_metrics(metrics.render().decode())
    assert parsed.initial_validation_loss == 2.75
    assert parsed.precision == ("auto", "fp32", 'no "bf16"')
