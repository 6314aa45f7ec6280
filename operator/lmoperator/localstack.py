"""devcluster + CRDs + the operator on one machine: what `elasticlm demo` and the
integration tests run.

Both devcluster and the operator are subprocesses, as a user would start them with
`elasticlm local up` and `elasticlm operator`, so what is tested is what users run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import kubernetes

from devcluster import paths as devcluster_paths
from lmoperator.api.crd import RESOURCE_KINDS, crd_manifest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class LocalStack:
    state_dir: Path
    kubeconfig: Path
    url: str
    api: kubernetes.client.ApiClient
    namespaces: list[str] = field(default_factory=list)
    operator: subprocess.Popen[bytes] | None = None
    operator_metrics_port: int = 0
    _operator_log: IO[bytes] | None = None

    @property
    def operator_log(self) -> Path:
        return self.state_dir / "operator.log"

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The local directory standing in for a PersistentVolumeClaim."""
        return devcluster_paths.claim_dir(self.state_dir, namespace, claim)

    def install_crds(self) -> None:
        # Any: the client's generated signatures want model objects; plain dicts work.
        ext: Any = kubernetes.client.ApiextensionsV1Api(self.api)
        names = []
        for kind in RESOURCE_KINDS:
            body = crd_manifest(kind)
            names.append(body["metadata"]["name"])
            try:
                ext.create_custom_resource_definition(body)
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
                current = ext.read_custom_resource_definition(body["metadata"]["name"])
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(body["metadata"]["name"], body)
        deadline = time.monotonic() + 30
        for name in names:
            while True:
                crd = ext.read_custom_resource_definition(name)
                conditions = {c.type: c.status for c in (crd.status.conditions or [])}
                if conditions.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} was not established within 30 s")
                time.sleep(0.1)

    def start_operator(self, *extra: str) -> subprocess.Popen[bytes]:
        """`elasticlm operator`, logging to operator.log in the state directory."""
        if self.operator is not None and self.operator.poll() is None:
            raise RuntimeError("the operator is already running")
        self.operator_metrics_port = free_port()
        scope = [a for ns in self.namespaces for a in ("--namespace", ns)] or ["--all-namespaces"]
        command = [
            sys.executable,
            "-P",
            "-m",
            "lmoperator",
            "operator",
            *scope,
            "--metrics-port",
            str(self.operator_metrics_port),
            *extra,
        ]
        self._operator_log = self.operator_log.open("ab")
        self.operator = subprocess.Popen(
            command,
            stdout=self._operator_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            cwd=self.state_dir,
        )
        return self.operator

    def stop_operator(self, kill: bool = False) -> None:
        if self.operator is None:
            return
        if kill:
            self.operator.kill()
            self.operator.wait()
        else:
            stop_process(self.operator)
        self.operator = None
        if self._operator_log is not None:
            self._operator_log.close()
            self._operator_log = None


@contextmanager
def devcluster_running(
    state_dir: Path, *extra_args: str, timeout: float = 60
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """`python -m devcluster up` until the block ends; yields (process, its info file)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    info_file = state_dir / "devcluster.json"
    info_file.unlink(missing_ok=True)
    with (state_dir / "devcluster.log").open("ab") as log:
        # -P keeps the working directory off sys.path, so the installed packages load.
        process = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "devcluster",
                "up",
                "--state-dir",
                str(state_dir),
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=state_dir,
        )
        try:
            deadline = time.monotonic() + timeout
            while not info_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (state_dir / "devcluster.log").read_text()
                    raise RuntimeError(f"devcluster did not start; its log:\n{output}")
                time.sleep(0.05)
            info: dict[str, Any] = json.loads(info_file.read_text())
            yield process, info
        finally:
            stop_process(process)


@contextmanager
def local_stack(
    state_dir: Path,
    namespaces: list[str] | None = None,
    operator: bool = True,
    devcluster_args: Sequence[str] = (),
) -> Iterator[LocalStack]:
    """devcluster (started with `devcluster_args`, e.g. `--node-cpu 2`) with the CRDs
    installed and (by default) the operator running."""
    with devcluster_running(state_dir, *devcluster_args) as (_, info):
        kubeconfig = Path(info["kubeconfig"])
        api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        stack = LocalStack(
            state_dir=state_dir,
            kubeconfig=kubeconfig,
            url=str(info["url"]),
            api=api,
            namespaces=list(namespaces or []),
        )
        try:
            stack.install_crds()
            if operator:
                stack.start_operator()
            yield stack
        finally:
            stack.stop_operator()
            api.close()
