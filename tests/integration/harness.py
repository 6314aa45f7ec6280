"""Starting devcluster (or using a real cluster) and driving it from tests.

By default each test session starts devcluster in a subprocess, as a user would with
`elasticlm local up`. With ELASTICLM_E2E=1 the same tests run against the cluster of the
current KUBECONFIG instead, so any divergence from Kubernetes shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kubernetes

from lmoperator.localstack import devcluster_running
from tests.kubeclient import api_client

E2E = os.environ.get("ELASTICLM_E2E") == "1"
KUBECTL = shutil.which("kubectl")


def kubectl_binary(minor: int | None) -> str | None:
    """A specific kubectl 1.<minor> next to the dispatcher, or the dispatcher itself."""
    if KUBECTL is None:
        return None
    if minor is None:
        return KUBECTL
    candidate = Path(os.path.realpath(KUBECTL)).parent / f"kubectl.1.{minor}"
    return str(candidate) if candidate.exists() else None


@dataclass
class Cluster:
    kubeconfig: Path
    url: str
    cache_dir: Path
    state_dir: Path | None  # None for a real cluster

    def api_client(self) -> kubernetes.client.ApiClient:
        return api_client(self.kubeconfig)

    def kubectl(
        self,
        *args: str,
        minor: int | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; `minor` picks kubectl 1.<minor> explicitly."""
        binary = kubectl_binary(minor)
        if binary is None:
            raise RuntimeError(f"kubectl 1.{minor} is not installed")
        command = [
            binary,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            *args,
        ]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


def kubectl_lm_command(
    kubeconfig: Path, namespace: str, *args: str
) -> tuple[list[str], dict[str, str]]:
    """`kubectl lm ARGS` as a user runs it: kubectl finds the `kubectl-lm` executable of
    this environment on the PATH (flags go after the plugin's name: kubectl allows none
    before it)."""
    if KUBECTL is None:
        raise RuntimeError("kubectl is not installed")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return [KUBECTL, "lm", *args, f"--kubeconfig={kubeconfig}", "-n", namespace], env


def kubectl_lm(
    kubeconfig: Path, namespace: str, *args: str, expect: int | Sequence[int] = 0
) -> subprocess.CompletedProcess[str]:
    """Run `kubectl lm ARGS`; fail unless it exits with `expect`."""
    command, env = kubectl_lm_command(kubeconfig, namespace, *args)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    allowed = [expect] if isinstance(expect, int) else list(expect)
    if result.returncode not in allowed:
        raise AssertionError(
            f"kubectl lm {' '.join(args)} exited {result.returncode}, not {expect}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


# Run `python -m devcluster up` for the length of a block: (process, info).
devcluster_process = devcluster_running


@contextmanager
def running_cluster(base: Path) -> Iterator[Cluster]:
    cache_dir = base / "kubectl-cache"
    if E2E:
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        api = api_client(kubeconfig)
        yield Cluster(kubeconfig, api.configuration.host, cache_dir, None)
        return
    state_dir = base / "devcluster"
    with devcluster_process(state_dir) as (_, info):
        yield Cluster(Path(info["kubeconfig"]), info["url"], cache_dir, state_dir)
