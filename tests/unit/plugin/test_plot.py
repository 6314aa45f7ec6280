"""`elasticlm plot NAME`: the autoscaling history ConfigMap drawn as a PNG of replicas
against load, and the errors a user can meet (no history, no matplotlib)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from lmoperator.api import kinds
from lmoperator.autoscale.history import MetricHistory
from lmoperator.cli import main
from lmoperator.plugin import commands, plot
from lmoperator.plugin.commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Session

T0 = 1_767_268_800.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_history() -> MetricHistory:
    h = MetricHistory()
    load = [1, 2, 6, 9, 9, 4, 1]
    replicas = [1, 1, 2, 3, 3, 3, 1]
    for minute, (demand, count) in enumerate(zip(load, replicas, strict=True)):
        if minute == 4:
            h.observe(T0 + 60 * minute, count, {})  # a minute without a value: a gap
        else:
            h.observe(T0 + 60 * minute, count, {"InFlightRequests": float(demand)})
    h.observe(T0 + 60 * 7, 1, {"InFlightRequests": 1.0})  # the open minute
    return h


def test_draw_writes_a_png_with_replicas_and_each_signal(tmp_path: Path) -> None:
    out = tmp_path / "chat.png"
    series = plot.draw(sample_history(), "lmservice ns/chat", out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert list(series) == ["replicas", "InFlightRequests"]
    assert series["replicas"] == [1, 1, 2, 3, 3, 3, 1, 1]
    # Minute 4 had no value: the line breaks there (NaN), it does not drop to zero.
    demand = series["InFlightRequests"]
    assert [v for v in demand if not math.isnan(v)] == [1, 2, 6, 9, 4, 1, 1]
    assert sum(math.isnan(v) for v in demand) == 1


class FakeApi:
    def __init__(self, configmaps: dict[str, dict[str, Any]]) -> None:
        self.configmaps = configmaps
        self.asked: list[tuple[str, str, str]] = []

    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked.append((kind.plural, namespace, name))
        return self.configmaps.get(name)


def connected(monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> None:
    session = Session(api, "team", "https://cluster")  # type: ignore[arg-type]
    monkeypatch.setattr(commands, "connect", lambda args: session)


def test_plot_reads_the_services_configmap_and_writes_the_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = sample_history().to_data(T0 + 60 * 7 + 1)
    api = FakeApi({"chat-autoscaler-history": {"data": data}})
    connected(monkeypatch, api)
    out = tmp_path / "out.png"
    assert main(["plot", "lms/chat", "-o", str(out)]) == EXIT_OK
    assert api.asked == [("configmaps", "team", "chat-autoscaler-history")]
    assert out.read_bytes()[:8] == PNG_MAGIC
    said = capsys.readouterr().out
    assert said == f"wrote {out}: replicas, InFlightRequests over 7 minute(s)\n"


def test_no_history_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    connected(monkeypatch, FakeApi({}))
    assert main(["plot", "chat"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith('error: no autoscaling history for lmservice "chat" in namespace "team"')
    assert "Traceback" not in err


def test_only_a_service_has_a_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "lmtj/train"]) == EXIT_USAGE
    assert "plot draws an LMService's autoscaling history" in capsys.readouterr().err


def test_without_matplotlib_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    assert main(["plot", "chat"]) == EXIT_FAILED
    assert "pip install 'elasticlm[plot]'" in capsys.readouterr().err
