"""Pods that really run: probes, services, env, restart policies, signals, logs, volumes."""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.integration.conformance.helpers import (
    HTTP_SERVER,
    NOT_YET,
    POD_TIMEOUT,
    container_status,
    gone,
    iter_lines,
    pod_ready,
    python_pod,
    wait_default_service_account,
    wait_pod_phase,
)
from tests.integration.harness import E2E
from tests.kubeclient import CoreApi
from tests.waiting import wait_for

PRINT_ENV = "import json, os; print(json.dumps(dict(os.environ)))"
SLEEP = "import time; time.sleep(600)"


@pytest.fixture(autouse=True)
def _service_account(core: CoreApi, namespace: str) -> None:
    wait_default_service_account(core, namespace)


def logs(core: CoreApi, name: str, namespace: str, **kw: object) -> str:
    return str(core.read_namespaced_pod_log(name, namespace, container="main", **kw))


def env_of(core: CoreApi, name: str, namespace: str) -> dict[str, str]:
    wait_pod_phase(core, name, namespace, "Succeeded")
    return dict(json.loads(logs(core, name, namespace).strip().splitlines()[-1]))


def web_pod(name: str, **probe: object) -> dict[str, Any]:
    pod = python_pod(name, HTTP_SERVER, restart_policy="Always", labels={"app": "web"}, grace=1)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "name": "http"}]
    pod["spec"]["containers"][0]["readinessProbe"] = probe or {
        "httpGet": {"path": "/", "port": 8080},
        "periodSeconds": 1,
    }
    return pod


def start_web(core: CoreApi, namespace: str, replicas: int) -> list[str]:
    """Service `web` (80 -> 8080) and `replicas` ready HTTP server pods; their pod IPs."""
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    names = [f"web-{i}" for i in range(replicas)]
    for name in names:
        core.create_namespaced_pod(namespace, web_pod(name))
    for name in names:
        wait_for(
            functools.partial(pod_ready, core, name, namespace),
            POD_TIMEOUT,
            f"{name} ready",
            retry_on=NOT_YET,
        )
    return [core.read_namespaced_pod(n, namespace).status.pod_ip for n in names]


def endpoint_ips(core: CoreApi, namespace: str) -> tuple[set[str], set[str]]:
    endpoints = core.read_namespaced_endpoints("web", namespace)
    ready, not_ready = set(), set()
    for subset in endpoints.subsets or []:
        assert [p.port for p in subset.ports] == [8080]
        ready |= {a.ip for a in subset.addresses or []}
        not_ready |= {a.ip for a in subset.not_ready_addresses or []}
    return ready, not_ready


def test_http_server_becomes_ready_and_gets_endpoints(core: CoreApi, namespace: str) -> None:
    ips = start_web(core, namespace, 2)
    assert all(ips)
    assert len(set(ips)) == 2, ips
    pod = core.read_namespaced_pod("web-0", namespace)
    conditions = {c.type: c.status for c in pod.status.conditions}
    # (PodReadyToStartContainers exists since Kubernetes 1.29)
    conditions.pop("PodReadyToStartContainers", None)
    assert conditions == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert pod.status.host_ip
    assert pod.status.start_time is not None
    assert pod.status.pod_ips[0].ip == pod.status.pod_ip
    assert pod.status.container_statuses[0].ready is True
    assert pod.status.container_statuses[0].state.running is not None
    assert "serving on " + pod.status.pod_ip in logs(core, "web-0", namespace)

    # a pod that never passes its readiness probe is listed as not ready
    unready = web_pod("web-bad", exec={"command": ["python", "-c", "raise SystemExit(1)"]},
                      periodSeconds=1)  # fmt: skip
    core.create_namespaced_pod(namespace, unready)
    wait_pod_phase(core, "web-bad", namespace, "Running")
    bad_ip = wait_for(
        lambda: core.read_namespaced_pod("web-bad", namespace).status.pod_ip,
        10,
        "a pod IP",
        retry_on=NOT_YET,
    )
    wait_for(
        lambda: endpoint_ips(core, namespace) == (set(ips), {bad_ip}),
        POD_TIMEOUT,
        "endpoints with two ready addresses and one not ready",
        retry_on=NOT_YET,
    )
    core.delete_namespaced_pod("web-1", namespace, grace_period_seconds=0)
    wait_for(
        lambda: endpoint_ips(core, namespace) == ({ips[0]}, {bad_ip}),
        POD_TIMEOUT,
        "the deleted pod's address to leave the endpoints",
        retry_on=NOT_YET,
    )


@pytest.mark.skipif(E2E, reason="a real cluster's service IPs are not reachable from the host")
def test_service_cluster_ip_reaches_ready_pods(core: CoreApi, namespace: str) -> None:
    start_web(core, namespace, 2)
    service = core.read_namespaced_service("web", namespace)
    url = f"http://{service.spec.cluster_ip}:80/"

    def fetch() -> str:
        return fetch_url(url)

    # Round robin over the ready pods, once the proxy has heard of both endpoints (it
    # learns them from the Endpoints object, a moment after the pods become ready).
    wait_for(
        lambda: {fetch() for _ in range(8)} == {"web-0", "web-1"},
        15,
        f"answers from both pods through {url}",
        retry_on=NOT_YET,
    )

    # a targetPort naming the container port
    named = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "named"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": "http"}]},
        },
    )
    named_url = f"http://{named.spec.cluster_ip}:8000/"
    answer = wait_for(
        lambda: fetch_url(named_url), 15, f"an answer from {named_url}", retry_on=NOT_YET
    )
    assert answer in {"web-0", "web-1"}

    core.delete_namespaced_pod("web-0", namespace, grace_period_seconds=0)
    wait_for(
        lambda: {fetch() for _ in range(4)} == {"web-1"},
        15,
        "only web-1 answering",
        retry_on=NOT_YET,
    )


def fetch_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_env_from_configmap_secret_and_fields(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"level": "debug"}}
    )
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "sec"}, "data": {"token": base64.b64encode(b"s3cret").decode()}},
    )
    env: list[dict[str, Any]] = [
        {"name": "LITERAL", "value": "plain"},
        {"name": "EXPANDED", "value": "level=$(LEVEL)"},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "LATE", "value": "after $(LEVEL)"},
    ]
    core.create_namespaced_pod(namespace, python_pod("envy", PRINT_ENV, env=env))
    got = env_of(core, "envy", namespace)
    pod = core.read_namespaced_pod("envy", namespace)
    assert got["LITERAL"] == "plain"
    assert got["LEVEL"] == "debug"
    assert got["TOKEN"] == "s3cret"
    assert got["POD_NAME"] == "envy"
    assert got["POD_NS"] == namespace
    assert got["POD_IP"] == pod.status.pod_ip
    assert got["EXPANDED"] == "level=$(LEVEL)"  # LEVEL is defined later in the list
    assert got["LATE"] == "after debug"
    assert got["HOSTNAME"] == "envy"


def test_variable_expansion_in_command_and_args(core: CoreApi, namespace: str) -> None:
    pod = python_pod("expand", "", env=[{"name": "GREETING", "value": "hi there"}])
    container = pod["spec"]["containers"][0]
    container["command"] = ["python", "-c"]
    container["args"] = [
        "import sys; print(sys.argv[1:])",
        "$(GREETING)",
        "$$(GREETING)",
        "$(NOPE)",
    ]
    core.create_namespaced_pod(namespace, pod)
    assert wait_pod_phase(core, "expand", namespace, "Succeeded", "Failed") == "Succeeded"
    assert logs(core, "expand", namespace).strip() == str(["hi there", "$(GREETING)", "$(NOPE)"])


def test_crash_loop_back_off(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(
        namespace, python_pod("crasher", "raise SystemExit(2)", restart_policy="Always", grace=1)
    )

    def backing_off() -> Any:
        status = container_status(core, "crasher", namespace)
        waiting = status and status.state.waiting
        return waiting and waiting.reason == "CrashLoopBackOff" and status

    status = wait_for(
        backing_off, POD_TIMEOUT, "a CrashLoopBackOff waiting state", retry_on=NOT_YET
    )
    assert status.restart_count >= 1
    assert status.last_state.terminated.exit_code == 2
    assert status.ready is False


def test_service_environment_variables(core: CoreApi, namespace: str) -> None:
    backend = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "model-backend"},
            "spec": {"ports": [{"name": "http", "port": 1234}]},
        },
    )
    core.create_namespaced_pod(namespace, python_pod("client", PRINT_ENV))
    got = env_of(core, "client", namespace)
    assert got["MODEL_BACKEND_SERVICE_HOST"] == backend.spec.cluster_ip
    assert got["MODEL_BACKEND_SERVICE_PORT"] == "1234"
    assert got["MODEL_BACKEND_SERVICE_PORT_HTTP"] == "1234"
    assert got["MODEL_BACKEND_PORT"] == f"tcp://{backend.spec.cluster_ip}:1234"
    assert "KUBERNETES_SERVICE_HOST" in got


def test_restart_policy_never(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("ok", "print('fine')"))
    core.create_namespaced_pod(namespace, python_pod("bad", "raise SystemExit(3)"))
    assert wait_pod_phase(core, "ok", namespace, "Succeeded", "Failed") == "Succeeded"
    assert wait_pod_phase(core, "bad", namespace, "Succeeded", "Failed") == "Failed"
    ok = container_status(core, "ok", namespace)
    assert ok.state.terminated.exit_code == 0
    assert ok.state.terminated.reason == "Completed"
    assert ok.restart_count == 0
    assert ok.ready is False
    bad = container_status(core, "bad", namespace)
    assert bad.state.terminated.exit_code == 3
    assert bad.state.terminated.reason == "Error"
    assert bad.restart_count == 0
    assert bad.state.terminated.started_at <= bad.state.terminated.finished_at


def test_restart_policy_on_failure(core: CoreApi, namespace: str) -> None:
    code = (
        "import os, pathlib\n"
        "marker = pathlib.Path(os.environ['SCRATCH']) / 'tried'\n"
        "if marker.exists():\n"
        "    print('attempt 2')\n"
        "else:\n"
        "    marker.touch()\n"
        "    print('attempt 1')\n"
        "    raise SystemExit(1)\n"
    )
    pod = python_pod(
        "flaky",
        code,
        restart_policy="OnFailure",
        env=[{"name": "SCRATCH", "value": "/scratch"}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, pod)
    assert wait_pod_phase(core, "flaky", namespace, "Succeeded", "Failed") == "Succeeded"
    status = container_status(core, "flaky", namespace)
    assert status.restart_count == 1
    assert status.state.terminated.exit_code == 0
    assert status.last_state.terminated.exit_code == 1
    assert logs(core, "flaky", namespace).strip() == "attempt 2"
    assert logs(core, "flaky", namespace, previous=True).strip() == "attempt 1"


def test_restart_policy_always(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(
        namespace, python_pod("loop", "print('ran')", restart_policy="Always", grace=1)
    )
    status = wait_for(
        lambda: (s := container_status(core, "loop", namespace)) and s.restart_count >= 2 and s,
        POD_TIMEOUT,
        "two restarts",
        retry_on=NOT_YET,
    )
    assert status.last_state.terminated.exit_code == 0
    assert status.last_state.terminated.reason == "Completed"
    assert pod_phase_now(core, "loop", namespace) == "Running"  # Always never completes


def pod_phase_now(core: CoreApi, name: str, namespace: str) -> str:
    return str(core.read_namespaced_pod(name, namespace).status.phase)


def missing_command_pod(name: str) -> dict[str, Any]:
    pod = python_pod(name, "")
    pod["spec"]["containers"][0]["command"] = ["no-such-command-elasticlm", "--flag"]
    return pod


def test_missing_command_fails_the_container(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(namespace, missing_command_pod("broken"))
    assert wait_pod_phase(core, "broken", namespace, "Failed") == "Failed"
    status = container_status(core, "broken", namespace)
    terminated = status.state.terminated
    assert terminated is not None, status
    assert terminated.reason in ("StartError", "ContainerCannotRun"), terminated
    assert terminated.exit_code != 0
    assert "no-such-command-elasticlm" in (terminated.message or ""), terminated
    # the node keeps running other pods
    core.create_namespaced_pod(namespace, python_pod("fine", "print('still here')"))
    assert wait_pod_phase(core, "fine", namespace, "Succeeded", "Failed") == "Succeeded"
    assert logs(core, "fine", namespace).strip() == "still here"


def test_missing_command_with_restarts_backs_off(core: CoreApi, namespace: str) -> None:
    pod = missing_command_pod("crashing")
    pod["spec"]["restartPolicy"] = "Always"
    core.create_namespaced_pod(namespace, pod)

    def crash_looping() -> bool:
        status = container_status(core, "crashing", namespace)
        if status is None or status.restart_count < 1:
            return False
        last = status.last_state.terminated
        return last is not None and "no-such-command-elasticlm" in (last.message or "")

    wait_for(
        crash_looping, POD_TIMEOUT, "a restarted container that failed to start", retry_on=NOT_YET
    )
    assert pod_phase_now(core, "crashing", namespace) in ("Pending", "Running")


@pytest.mark.skipif(E2E, reason="a real container runtime logs nothing for a failed start")
def test_missing_command_error_is_in_the_logs(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(namespace, missing_command_pod("broken"))
    wait_pod_phase(core, "broken", namespace, "Failed")
    assert "no-such-command-elasticlm" in logs(core, "broken", namespace)


class LogFollower:
    """`GET .../log?follow=true` read in a thread."""

    def __init__(self, core: CoreApi, name: str, namespace: str) -> None:
        self.stream = core.read_namespaced_pod_log(
            name, namespace, container="main", follow=True, _preload_content=False
        )
        self.lines: list[str] = []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in iter_lines(self.stream):
                self.lines.append(line)
        finally:
            self.ended.set()

    def wait_line(self, text: str, timeout: float) -> None:
        wait_for(lambda: text in self.lines, timeout, f"log line {text!r}; have {self.lines}")


def test_logs_follow(core: CoreApi, namespace: str) -> None:
    code = (
        "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\n"
    )
    core.create_namespaced_pod(namespace, python_pod("ticker", code))
    wait_pod_phase(core, "ticker", namespace, "Running", "Succeeded")
    follower = LogFollower(core, "ticker", namespace)
    assert follower.ended.wait(POD_TIMEOUT), "the log stream did not end with the container"
    assert [line for line in follower.lines if line] == [f"tick {i}" for i in range(5)]
    assert logs(core, "ticker", namespace, tail_lines=2).splitlines() == ["tick 3", "tick 4"]


def test_deletion_sends_sigterm_then_sigkill(core: CoreApi, namespace: str) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('got SIGTERM', flush=True))\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    core.create_namespaced_pod(namespace, python_pod("stubborn", code, grace=30))
    wait_pod_phase(core, "stubborn", namespace, "Running")
    follower = LogFollower(core, "stubborn", namespace)
    follower.wait_line("ready", POD_TIMEOUT)
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=3)
    deleting = core.read_namespaced_pod("stubborn", namespace)
    assert deleting.metadata.deletion_timestamp is not None
    assert deleting.metadata.deletion_grace_period_seconds == 3
    follower.wait_line("got SIGTERM", 10)
    wait_for(
        lambda: gone(lambda: core.read_namespaced_pod("stubborn", namespace)),
        30,
        "the pod to be gone after its grace period",
        retry_on=NOT_YET,
    )
    elapsed = time.monotonic() - started
    assert elapsed >= 2.5, f"the pod ignoring SIGTERM was gone after {elapsed:.1f}s"
    assert follower.ended.wait(10)


def test_deletion_of_a_cooperative_pod_does_not_wait_for_the_grace_period(
    core: CoreApi, namespace: str
) -> None:
    # PID 1 of a container ignores signals it has no handler for: install one
    code = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n" + SLEEP
    core.create_namespaced_pod(namespace, python_pod("polite", code, grace=60))
    wait_pod_phase(core, "polite", namespace, "Running")
    started = time.monotonic()
    deleting = core.delete_namespaced_pod("polite", namespace)  # the pod, being deleted
    assert deleting.metadata.deletion_grace_period_seconds == 60
    assert deleting.metadata.deletion_timestamp is not None
    wait_for(
        lambda: gone(lambda: core.read_namespaced_pod("polite", namespace)),
        30,
        "a pod that exits on SIGTERM to be gone",
        retry_on=NOT_YET,
    )
    assert time.monotonic() - started < 30


def test_exec_readiness_probes(core: CoreApi, namespace: str) -> None:
    for name, exit_code in (("yes", 0), ("no", 1)):
        pod = python_pod(name, SLEEP, restart_policy="Always", grace=1)
        pod["spec"]["containers"][0]["readinessProbe"] = {
            "exec": {"command": ["python", "-c", f"raise SystemExit({exit_code})"]},
            "periodSeconds": 1,
        }
        core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: pod_ready(core, "yes", namespace),
        POD_TIMEOUT,
        "the passing probe",
        retry_on=NOT_YET,
    )
    wait_pod_phase(core, "no", namespace, "Running")
    pod = core.read_namespaced_pod("no", namespace)
    conditions = {c.type: c for c in pod.status.conditions}
    assert conditions["Ready"].status == "False"
    assert conditions["ContainersReady"].status == "False"
    assert conditions["Ready"].reason == "ContainersNotReady"
    assert pod.status.container_statuses[0].ready is False
    assert pod.status.container_statuses[0].restart_count == 0  # readiness never restarts


def test_tcp_socket_probe(core: CoreApi, namespace: str) -> None:
    code = (
        "import os, socket, time\n"
        "time.sleep(1)\n"
        "s = socket.socket()\n"
        "s.bind((os.environ['POD_IP'], 9000))\n"
        "s.listen()\n"
        "while True:\n"
        "    s.accept()[0].close()\n"
    )
    pod = python_pod("tcp", code, restart_policy="Always", grace=1)
    pod["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": 9000},
        "periodSeconds": 1,
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: pod_ready(core, "tcp", namespace),
        POD_TIMEOUT,
        "the tcpSocket probe",
        retry_on=NOT_YET,
    )


def test_failing_liveness_probe_restarts_the_container(core: CoreApi, namespace: str) -> None:
    pod = python_pod("sick", "print('started', flush=True)\n" + SLEEP, restart_policy="Always",
                     grace=1)  # fmt: skip
    pod["spec"]["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["python", "-c", "raise SystemExit(1)"]},
        # Give the first run time to print before the probe kills it.
        "initialDelaySeconds": 1,
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    core.create_namespaced_pod(namespace, pod)
    status = wait_for(
        lambda: (s := container_status(core, "sick", namespace)) and s.restart_count >= 1 and s,
        POD_TIMEOUT,
        "a restart by the liveness probe",
        retry_on=NOT_YET,
    )
    assert status.last_state.terminated is not None
    assert "started" in logs(core, "sick", namespace, previous=True)


def test_configmap_and_secret_volumes(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"settings.json": '{"a": 1}'}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"k": "v"}}
    )
    code = (
        "import os, pathlib\n"
        "print(pathlib.Path(os.environ['CFG'], 'settings.json').read_text())\n"
        "print(pathlib.Path(os.environ['SEC'], 'k').read_text())\n"
    )
    pod = python_pod(
        "mounts",
        code,
        env=[{"name": "CFG", "value": "/etc/cfg"}, {"name": "SEC", "value": "/etc/sec"}],
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
            {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
        ],
    )
    pod["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "sec", "secret": {"secretName": "sec"}},
    ]
    core.create_namespaced_pod(namespace, pod)
    assert wait_pod_phase(core, "mounts", namespace, "Succeeded", "Failed") == "Succeeded"
    assert logs(core, "mounts", namespace).split() == ['{"a":', "1}", "v"]


def test_persistent_volume_claim_outlives_pods(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )

    def pod(name: str, code: str) -> dict[str, Any]:
        body = python_pod(
            name,
            code,
            env=[{"name": "DATA", "value": "/data"}],
            volumeMounts=[{"name": "data", "mountPath": "/data"}],
        )
        body["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        return body

    write = "import os, pathlib; pathlib.Path(os.environ['DATA'], 'f').write_text('kept')"
    core.create_namespaced_pod(namespace, pod("writer", write))
    assert wait_pod_phase(core, "writer", namespace, "Succeeded", "Failed") == "Succeeded"
    read = "import os, pathlib; print(pathlib.Path(os.environ['DATA'], 'f').read_text())"
    core.create_namespaced_pod(namespace, pod("reader", read))
    assert wait_pod_phase(core, "reader", namespace, "Succeeded", "Failed") == "Succeeded"
    assert logs(core, "reader", namespace).strip() == "kept"


def test_init_containers_and_working_dir(core: CoreApi, namespace: str) -> None:
    scratch = {"name": "scratch", "mountPath": "/scratch"}
    pod = python_pod(
        "inited",
        "import os; print(open('greeting').read(), os.listdir('.') == ['greeting'])",
        workingDir="/scratch",
        volumeMounts=[scratch],
    )
    pod["spec"]["initContainers"] = [
        {
            "name": "init",
            "image": pod["spec"]["containers"][0]["image"],
            "command": ["python", "-c", "open('greeting', 'w').write('hello from init')"],
            "workingDir": "/scratch",
            "volumeMounts": [scratch],
        }
    ]
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, pod)
    assert wait_pod_phase(core, "inited", namespace, "Succeeded", "Failed") == "Succeeded"
    assert logs(core, "inited", namespace).strip() == "hello from init True"
    status = core.read_namespaced_pod("inited", namespace).status
    init = status.init_container_statuses[0]
    assert init.name == "init"
    assert init.state.terminated.exit_code == 0
    conditions = {c.type: c.status for c in status.conditions}
    assert conditions["Initialized"] == "True"
    assert conditions["PodScheduled"] == "True"


@pytest.mark.skipif(E2E, reason="a hostPath lies on the node, not on the test's machine")
def test_host_path_volume(core: CoreApi, namespace: str, tmp_path: Path) -> None:
    code = "import os, pathlib; pathlib.Path(os.environ['OUT'], 'note').write_text('written')"
    pod = python_pod(
        "hostpath",
        code,
        env=[{"name": "OUT", "value": "/out"}],
        volumeMounts=[{"name": "out", "mountPath": "/out"}],
    )
    pod["spec"]["volumes"] = [{"name": "out", "hostPath": {"path": str(tmp_path)}}]
    core.create_namespaced_pod(namespace, pod)
    assert wait_pod_phase(core, "hostpath", namespace, "Succeeded", "Failed") == "Succeeded"
    assert (tmp_path / "note").read_text() == "written"


def test_logs_of_several_containers(core: CoreApi, namespace: str) -> None:
    pod = python_pod("pair", "print('from main')")
    pod["spec"]["containers"].append(
        {"name": "side", "image": pod["spec"]["containers"][0]["image"],
         "command": ["python", "-c", "print('from side')"]}
    )  # fmt: skip
    core.create_namespaced_pod(namespace, pod)
    wait_pod_phase(core, "pair", namespace, "Succeeded")
    assert logs(core, "pair", namespace).strip() == "from main"
    side = core.read_namespaced_pod_log("pair", namespace, container="side")
    assert side.strip() == "from side"
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.read_namespaced_pod_log("pair", namespace)  # which container?
    assert info.value.status == 400
    assert "main" in str(info.value.body)
    assert "side" in str(info.value.body)
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.read_namespaced_pod_log("pair", namespace, container="nope")
    assert info.value.status == 400
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.read_namespaced_pod_log("no-such-pod", namespace)
    assert info.value.status == 404


def test_log_options(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("lines", "for i in range(4): print('row', i)"))
    wait_pod_phase(core, "lines", namespace, "Succeeded")
    stamped = logs(core, "lines", namespace, timestamps=True).splitlines()
    assert len(stamped) == 4
    for i, line in enumerate(stamped):
        stamp, text = line.split(" ", 1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp), line
        assert text == f"row {i}"
    assert logs(core, "lines", namespace, tail_lines=1).splitlines() == ["row 3"]
    assert logs(core, "lines", namespace, limit_bytes=6) == "row 0\n"


def test_force_deletion_removes_the_pod_at_once(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(namespace, web_pod("forced"))
    wait_for(
        lambda: pod_ready(core, "forced", namespace), POD_TIMEOUT, "the pod ready", retry_on=NOT_YET
    )
    ip = core.read_namespaced_pod("forced", namespace).status.pod_ip
    core.delete_namespaced_pod("forced", namespace, grace_period_seconds=0)
    assert gone(lambda: core.read_namespaced_pod("forced", namespace))
    if not E2E:  # the processes of a force-deleted pod are killed too

        def refused() -> bool:
            try:
                urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).close()
            except OSError:
                return True
            return False

        wait_for(refused, 15, "the force-deleted pod's server to stop", retry_on=NOT_YET)


def test_pods_are_bound_to_a_ready_node(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("placed", "print(1)"))
    wait_pod_phase(core, "placed", namespace, "Succeeded")
    node_name = core.read_namespaced_pod("placed", namespace).spec.node_name
    node = core.read_node(node_name)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert core.read_namespaced_pod("placed", namespace).status.host_ip in {
        a.address for a in node.status.addresses
    }


def test_termination_message(core: CoreApi, namespace: str) -> None:
    """The file at terminationMessagePath becomes `terminated.message`; with
    FallbackToLogsOnError a failure without one reports the log's tail."""
    write = "open('/dev/termination-log', 'w').write('{\"completed\": true}')"
    core.create_namespaced_pod(namespace, python_pod("writer", write))
    crash = python_pod("crash", "print('out of memory, probably'); raise SystemExit(1)")
    crash["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    core.create_namespaced_pod(namespace, crash)
    assert wait_pod_phase(core, "writer", namespace, "Succeeded", "Failed") == "Succeeded"
    assert wait_pod_phase(core, "crash", namespace, "Succeeded", "Failed") == "Failed"
    written = container_status(core, "writer", namespace).state.terminated
    assert json.loads(written.message) == {"completed": True}
    crashed = container_status(core, "crash", namespace).state.terminated
    assert "out of memory, probably" in crashed.message
