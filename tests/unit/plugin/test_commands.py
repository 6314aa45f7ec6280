"""The plugin's commands without a cluster: choosing the cluster, and every error that
must reach the user as one line and an exit code (never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmoperator import kube
from lmoperator.cli import _parser, kubectl_plugin_main, main
from lmoperator.localstack import free_port
from lmoperator.plugin.commands import EXIT_FAILED, EXIT_USAGE

Capsys = pytest.CaptureFixture[str]


def kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "main", "context": context},
                    {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "o"}},
                ],
                "current-context": "main",
            }
        )
    )
    return path


def test_the_namespace_is_the_contexts_then_default(tmp_path: Path) -> None:
    config = str(kubeconfig(tmp_path / "a", "http://127.0.0.1:1", namespace="team"))
    client, namespace = kube.client_for_user(config, None)
    assert (client.configuration.host, namespace) == ("http://127.0.0.1:1", "team")
    assert kube.client_for_user(config, "other")[1] == "o"
    plain = str(kubeconfig(tmp_path / "b", "http://127.0.0.1:1"))
    assert kube.client_for_user(plain, None)[1] == "default"


@pytest.mark.parametrize(
    ("argv", "namespace"),
    [
        (["-n", "a", "get"], "a"),
        (["get", "-n", "b"], "b"),
        (["-n", "a", "get", "-n", "b"], "b"),
        (["get"], None),
    ],
)
def test_kubectls_flags_go_before_or_after_the_command(
    argv: list[str], namespace: str | None
) -> None:
    assert _parser("kubectl lm").parse_args(argv).namespace == namespace


def test_elasticlm_takes_them_after_the_command_only() -> None:
    """`elasticlm operator -n NS` watches NS: a namespace before the command must not
    pass for it."""
    assert _parser("elasticlm").parse_args(["get", "-n", "b"]).namespace == "b"
    with pytest.raises(SystemExit):
        _parser("elasticlm").parse_args(["-n", "a", "operator"])


def test_no_kubeconfig(tmp_path: Path, capsys: Capsys) -> None:
    missing = tmp_path / "nowhere"
    assert kubectl_plugin_main(["get", "--kubeconfig", str(missing)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("error: no cluster is configured (")
    assert "point --kubeconfig or KUBECONFIG at a cluster's kubeconfig" in err
    assert "Traceback" not in err


def test_an_unknown_context_names_the_ones_there_are(tmp_path: Path, capsys: Capsys) -> None:
    config = str(kubeconfig(tmp_path / "config", "http://127.0.0.1:1"))
    assert kubectl_plugin_main(["get", "--kubeconfig", config, "--context", "x"]) == EXIT_FAILED
    assert 'context "x" is not in the kubeconfig (it has: main, other)' in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["get"],
        ["get", "lms"],
        ["describe", "lmtj/lm"],
        ["logs", "lmtj/lm"],
        ["logs", "-f", "lms/chat"],
        ["scale", "lmtj/lm", "3"],
    ],
)
def test_a_cluster_that_does_not_answer(tmp_path: Path, capsys: Capsys, argv: list[str]) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    config = str(kubeconfig(tmp_path / "config", server))
    assert kubectl_plugin_main([*argv, "--kubeconfig", config]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the cluster at {server} to ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "pods"], None),  # a name of no kind of ours: checked by the cluster
        (["get", "pods/x"], 'error: unknown kind "pods": kubectl lm knows lmtj'),
        (["describe", "deploy/x"], 'error: unknown kind "deploy"'),
        (["logs", "lm"], "error: expected KIND/NAME (lmtj/NAME or lms/NAME), got lm"),
        (["scale", "lmtj/lm"], "error: say how many replicas: kubectl lm scale KIND/NAME N"),
        (["scale", "lmtj/lm", "-1"], "error: replicas must be 0 or more (got -1)"),
        (["scale", "lmtj/lm", "--replicas", "-2"], "error: replicas must be 0 or more (got -2)"),
        (["get", "-A", "lmtj", "lm"], "error: objects cannot be named across all namespaces"),
    ],
)
def test_command_line_mistakes_exit_2_before_any_request(
    tmp_path: Path, capsys: Capsys, argv: list[str], message: str | None
) -> None:
    config = str(tmp_path / "no-cluster-needed")
    code = kubectl_plugin_main([*argv, "--kubeconfig", config])
    err = capsys.readouterr().err
    if message is None:
        assert code == EXIT_FAILED
        assert "no cluster is configured" in err
    else:
        assert code == EXIT_USAGE
        assert err.startswith(message), err


def test_elasticlm_has_the_same_commands(tmp_path: Path, capsys: Capsys) -> None:
    assert main(["scale", "lms/chat", "--kubeconfig", str(tmp_path / "x")]) == EXIT_USAGE
    assert "say how many replicas" in capsys.readouterr().err
