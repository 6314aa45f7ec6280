"""The worker's metrics server: its answers, and what a client hanging up leaves in the log."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from lmworker.metrics import TrainMetrics, serve


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = serve(TrainMetrics(), "127.0.0.1", 0)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_it_serves_metrics_and_probes(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        assert answer.read() == b"ok\n"


def test_a_client_hanging_up_prints_no_traceback(
    server: ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request = socket.socket()
    request.close()
    for hang_up in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
        try:
            raise hang_up
        except ConnectionError:
            server.handle_error(request, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real bug")
    except ValueError:
        server.handle_error(request, ("127.0.0.1", 1))
    assert "a real bug" in capsys.readouterr().err


def test_the_validation_loss_reaches_the_operator_only_once_measured() -> None:
    """The contract with lmoperator.worker_metrics: no figure until the first measurement,
    then the loss with the step it was measured at."""
    from lmoperator.worker_metrics import parse_worker_metrics

    metrics = TrainMetrics()
    fresh = parse_worker_metrics(metrics.render().decode())
    assert fresh.validation_loss is None
    metrics.validation_loss.set(2.5)
    metrics.validation_step.set(40)
    measured = parse_worker_metrics(metrics.render().decode())
    assert (measured.validation_step, measured.validation_loss) == (40, 2.5)
