"""`elasticlm operator`: arguments reach the operator's run()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lmoperator.main
from lmoperator import leaderelection
from lmoperator.cli import EXIT_OK, main
from lmoperator.leaderelection import LeaderElectionConfig
from lmoperator.reconcile.lease import LeaseTimings


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(lmoperator.main, "run", lambda **kw: recorded.append(kw))
    return recorded


def test_namespaces_metrics_and_peering(calls: list[dict[str, Any]]) -> None:
    argv = ["operator", "-n", "a", "--namespace", "b", "--metrics-port", "0", "--peering", "p"]
    assert main(argv) == EXIT_OK
    assert len(calls) == 1
    call = calls[0]
    assert {
        k: call[k] for k in ("namespaces", "metrics_port", "peering", "verbose", "leader_election")
    } == {
        "namespaces": ["a", "b"],
        "metrics_port": 0,
        "peering": "p",
        "verbose": False,
        "leader_election": None,
    }


def test_defaults_watch_all_namespaces_standalone(calls: list[dict[str, Any]]) -> None:
    assert main(["operator", "--verbose"]) == EXIT_OK
    (call,) = calls
    assert call["namespaces"] == []
    assert call["metrics_port"] == 8080
    assert call["peering"] is None
    assert call["verbose"] is True
    assert call["liveness"] is None
    assert call["metrics_address"] == "0.0.0.0"
    defaults = call["pod_defaults"]
    assert defaults.worker.image is None
    assert defaults.server.resources is None
    assert call["leader_election"] is None
    assert main(["operator", "-A"]) == EXIT_OK
    assert calls[-1]["namespaces"] == []


def test_liveness_and_pod_defaults_reach_run(calls: list[dict[str, Any]]) -> None:
    argv = [
        "operator",
        "--liveness",
        "http://0.0.0.0:8081/healthz",
        "--metrics-address",
        "10.0.0.7",
        "--worker-image",
        "registry.example/worker:1",
        "--worker-image-pull-policy",
        "IfNotPresent",
        "--worker-resources",
        '{"requests": {"cpu": "2", "memory": "4Gi"}}',
        "--server-image",
        "registry.example/server:1",
        "--server-pod-security-context",
        '{"runAsUser": 2000, "fsGroup": 2000}',
    ]
    assert main(argv) == EXIT_OK
    (call,) = calls
    assert call["liveness"] == "http://0.0.0.0:8081/healthz"
    assert call["metrics_address"] == "10.0.0.7"
    worker, server = call["pod_defaults"].worker, call["pod_defaults"].server
    assert worker.image == "registry.example/worker:1"
    assert worker.image_pull_policy == "IfNotPresent"
    assert worker.resources is not None
    assert worker.resources.requests == {"cpu": "2", "memory": "4Gi"}
    assert worker.pod_security_context == {}
    assert server.image == "registry.example/server:1"
    assert server.resources is None
    assert server.pod_security_context == {"runAsUser": 2000, "fsGroup": 2000}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--worker-resources", "{cpu: 1}", "--worker-resources: not valid JSON"),
        ("--server-resources", '{"request": {}}', "--server-resources: request"),
        ("--worker-pod-security-context", '{"runAsUser": 0}', "runAsUser 0 (root)"),
        ("--server-pod-security-context", '{"privileged": true}', "unknown field(s) privileged"),
    ],
)
def test_a_bad_default_is_refused_naming_the_flag(
    calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    assert main(["operator", flag, value]) == 2
    assert message in capsys.readouterr().err
    assert calls == []


def test_namespace_and_all_namespaces_exclude_each_other(calls: list[dict[str, Any]]) -> None:
    with pytest.raises(SystemExit):
        main(["operator", "-n", "a", "-A"])
    assert calls == []


def test_leader_elect_with_its_options(calls: list[dict[str, Any]]) -> None:
    argv = [
        "operator",
        "--leader-elect",
        "--leader-election-namespace",
        "ops",
        "--leader-election-id",
        "lm-lock",
        "--leader-election-lease-duration",
        "8",
        "--leader-election-renew-deadline",
        "5",
        "--leader-election-retry-period",
        "1",
    ]
    assert main(argv) == EXIT_OK
    config = calls[-1]["leader_election"]
    assert isinstance(config, LeaderElectionConfig)
    assert (config.namespace, config.name) == ("ops", "lm-lock")
    assert config.timings == LeaseTimings(8, 5.0, 1.0)
    assert config.identity  # the pod's name and a random suffix


def test_leader_elect_defaults(
    calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "elasticlm-system")
    monkeypatch.setenv("POD_NAME", "elasticlm-operator-5d8c7-x2x9q")
    assert main(["operator", "--leader-elect"]) == EXIT_OK
    config = calls[-1]["leader_election"]
    assert (config.namespace, config.name, config.timings) == (
        "elasticlm-system",
        "elasticlm-operator",
        LeaseTimings(15, 10.0, 2.0),
    )
    assert config.identity.startswith("elasticlm-operator-5d8c7-x2x9q_")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--leader-election-id", "x"],
            "--leader-election-id only apply with --leader-elect; add it",
        ),
        (
            [
                "--leader-elect",
                "--leader-election-namespace",
                "ops",
                "--leader-election-renew-deadline",
                "20",
            ],
            "--leader-election-renew-deadline (20) must be shorter than "
            "--leader-election-lease-duration (15)",
        ),
    ],
)
def test_leader_election_mistakes_are_named(
    calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert main(["operator", *argv]) == 2
    assert message in capsys.readouterr().err
    assert calls == []


def test_leader_elect_outside_a_pod_asks_for_the_namespace(
    calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(leaderelection, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "none")
    assert main(["operator", "--leader-elect"]) == 2
    assert "pass --leader-election-namespace NS" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--leader-elect", "--peering", "p"],
        ["--leader-elect", "--leader-election-lease-duration", "1.5"],
        ["--leader-elect", "--leader-election-retry-period", "0"],
    ],
)
def test_leader_election_arguments_refused_by_the_parser(
    calls: list[dict[str, Any]], argv: list[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["operator", *argv])
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


@pytest.mark.parametrize("namespaced", [True, False])
def test_startup_applies_the_scope_and_the_pod_defaults(
    monkeypatch: pytest.MonkeyPatch, namespaced: bool
) -> None:
    import logging

    import kopf

    from lmoperator.builders.defaults import Defaults, PodDefaults
    from lmoperator.handlers import common

    monkeypatch.setattr(lmoperator.main, "load_config", lambda: None)
    monkeypatch.setattr(lmoperator.main, "Kube", lambda: object())
    defaults = Defaults(worker=PodDefaults(image="registry.example/worker:1"))
    memo = kopf.Memo(metrics_port=0, namespaced=namespaced, pod_defaults=defaults)
    settings = kopf.OperatorSettings()
    try:
        configure: Any = lmoperator.main.configure  # kopf's decorator retypes it
        configure(settings=settings, memo=memo, logger=logging.getLogger("t"))
        # Named namespaces: no cluster-wide list/watch of namespaces or CRDs (and so no
        # ClusterRole for them).
        assert settings.scanning.disabled is namespaced
        assert common.pod_defaults() is defaults
    finally:
        common.set_pod_defaults(Defaults())
