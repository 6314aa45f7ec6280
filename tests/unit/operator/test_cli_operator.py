"""`elasticlm operator`: arguments reach the operator's run()."""

from __future__ import annotations

from typing import Any

import pytest

import lmoperator.main
from lmoperator.cli import EXIT_OK, main


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(lmoperator.main, "run", lambda **kw: recorded.append(kw))
    return recorded


def test_namespaces_metrics_and_peering(calls: list[dict[str, Any]]) -> None:
    argv = ["operator", "-n", "a", "--namespace", "b", "--metrics-port", "0", "--peering", "p"]
    assert main(argv) == EXIT_OK
    assert calls == [
        {"namespaces": ["a", "b"], "metrics_port": 0, "peering": "p", "verbose": False}
    ]


def test_defaults_watch_all_namespaces_standalone(calls: list[dict[str, Any]]) -> None:
    assert main(["operator", "--verbose"]) == EXIT_OK
    assert calls == [{"namespaces": [], "metrics_port": 8080, "peering": None, "verbose": True}]
    assert main(["operator", "-A"]) == EXIT_OK
    assert calls[-1]["namespaces"] == []


def test_namespace_and_all_namespaces_exclude_each_other(calls: list[dict[str, Any]]) -> None:
    with pytest.raises(SystemExit):
        main(["operator", "-n", "a", "-A"])
    assert calls == []


def test_handlers_are_registered() -> None:
    from tests.unit.operator.conftest import OPERATOR_REGISTRY

    registry = OPERATOR_REGISTRY

    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert {"created", "resumed", "updated/spec"} <= ids
    assert {h.id for h in registry._spawning.get_all_handlers()} >= {
        "follow_metrics",
        "delete_after_ttl",
    }


def test_local_without_the_devcluster_extra_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "re2" else real(name, *a)
    )
    assert main(["local", "up"]) == 2
    assert "pip install 'elasticlm[devcluster]'" in capsys.readouterr().err
