"""The devcluster kubelet against a tiny fake API server: real processes, real probes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devcluster import paths
from devcluster.kubelet.node import Kubelet
from devcluster.proxy import ServiceProxy
from tests.unit.devcluster.kubelet_fakeapi import FakeAPI
from tests.waiting import wait_for_async

JSON = dict[str, Any]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def make_pod(name: str, containers: list[JSON], **spec: Any) -> JSON:
    return {
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"containers": containers, **spec},
    }


def py(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]


POD_IP_ENV = [
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
]

HTTP_SERVER = """
    import http.server, os
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["POD_NAME"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    print("serving on", os.environ["POD_IP"], flush=True)
    http.server.HTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


class Env:
    def __init__(self, api: FakeAPI, kubelet: Kubelet, url: str, state: Path) -> None:
        self.api = api
        self.kubelet = kubelet
        self.url = url
        self.state = state

    def status(self, name: str) -> JSON:
        pod = self.api.get("pods", name)
        assert pod is not None, f"pod {name} is gone"
        return pod.get("status") or {}

    def cstatus(self, name: str, container: str | None = None) -> JSON:
        for c in self.status(name).get("containerStatuses") or []:
            if container is None or c["name"] == container:
                return c  # type: ignore[no-any-return]
        return {}

    def condition(self, name: str, ctype: str) -> str | None:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == ctype:
                return str(c["status"])
        return None

    def log(self, name: str, container: str, previous: bool = False) -> str:
        uid = self.api.get("pods", name)["metadata"]["uid"]  # type: ignore[index]
        fn = paths.previous_log_file if previous else paths.container_log_file
        p = fn(self.state, "default", name, uid, container)
        return p.read_text() if p.exists() else ""


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    api = FakeAPI()
    url = await api.start()
    state = tmp_path / "state"
    kubelet = Kubelet(
        url,
        state,
        backoff_base=0.2,
        backoff_max=2.0,
        stop_timeout=2.0,
        extra_env={"EXTRA": "from-kubelet", "MODE": "overridden-by-pod"},
    )
    await kubelet.start()
    await kubelet.wait_synced(5)
    try:
        yield Env(api, kubelet, url, kubelet.state_dir)
    finally:
        await kubelet.stop()
        await api.stop()


async def test_http_pod_becomes_ready_and_is_reachable_through_its_service(env: Env) -> None:
    for name in ("web-a", "web-b"):
        env.api.create(
            "pods",
            make_pod(
                name,
                [
                    {
                        "name": "server",
                        "image": "python:3.11",
                        "command": py(HTTP_SERVER),
                        "env": POD_IP_ENV,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/", "port": "http"},
                            "periodSeconds": 1,
                        },
                    }
                ],
            ),
        )
    await wait_for_async(lambda: env.condition("web-a", "Ready") == "True", timeout=15)
    await wait_for_async(lambda: env.condition("web-b", "Ready") == "True", timeout=15)
    st = env.status("web-a")
    assert st["phase"] == "Running"
    assert st["podIP"].startswith("127.10.")
    assert st["podIPs"] == [{"ip": st["podIP"]}]
    assert st["podIP"] != env.status("web-b")["podIP"]
    cs = env.cstatus("web-a")
    assert cs["ready"] is True
    assert cs["started"] is True
    assert cs["image"] == "python:3.11"
    assert "running" in cs["state"]
    assert {c["type"] for c in st["conditions"]} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://{st['podIP']}:8080/") as r,
    ):
        assert await r.text() == "web-a"
    assert "serving on" in env.log("web-a", "server")

    # A Service in front of both pods, through the userspace proxy.
    env.api.create(
        "services",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"tier": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    cluster_ip = env.api.get("services", "web")["spec"]["clusterIP"]  # type: ignore[index]
    env.api.create(
        "endpoints",
        {
            "metadata": {"name": "web"},
            "subsets": [
                {
                    "addresses": [
                        {"ip": env.status("web-a")["podIP"]},
                        {"ip": env.status("web-b")["podIP"]},
                    ],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                }
            ],
        },
    )
    proxy = ServiceProxy(env.url)
    await proxy.start()
    try:
        await proxy.wait_synced(5)
        await wait_for_async(lambda: (cluster_ip, 80) in proxy.listeners())
        seen = set()
        async with aiohttp.ClientSession() as s:
            for _ in range(4):
                async with s.get(f"http://{cluster_ip}/") as r:
                    seen.add(await r.text())
        assert seen == {"web-a", "web-b"}  # round robin
    finally:
        await proxy.stop()


async def test_missing_command_fails_with_the_error_in_status_and_log(env: Env) -> None:
    env.api.create(
        "pods",
        make_pod(
            "bad",
            [{"name": "main", "image": "x", "command": ["no-such-command-xyz", "--flag"]}],
            restartPolicy="Never",
        ),
    )
    await wait_for_async(lambda: env.status("bad").get("phase") == "Failed")
    term = env.cstatus("bad")["state"]["terminated"]
    assert term["reason"] == "StartError"
    assert term["exitCode"] == 128
    assert "no-such-command-xyz" in term["message"]
    assert "executable file not found" in term["message"]
    assert "executable file not found" in env.log("bad", "main")
    assert env.condition("bad", "Ready") == "False"

    # With restartPolicy Always it backs off and retries, never giving up.
    env.api.create(
        "pods", make_pod("bad-always", [{"name": "main", "command": ["no-such-command-xyz"]}])
    )
    await wait_for_async(lambda: env.cstatus("bad-always").get("restartCount", 0) >= 2)
    cs = env.cstatus("bad-always")
    assert cs["lastState"]["terminated"]["reason"] == "StartError"
    await wait_for_async(lambda: "waiting" in env.cstatus("bad-always")["state"])
    waiting = env.cstatus("bad-always")["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert "back-off" in waiting["message"]
    assert env.status("bad-always")["phase"] == "Running"  # as Kubernetes reports it


async def test_on_failure_restarts_with_growing_backoff(env: Env) -> None:
    # Fails three times, then succeeds; start times go to a file in an emptyDir that
    # the command names by its mount path.
    code = """
        import sys, time
        path = sys.argv[1]
        with open(path, "a") as f:
            f.write(f"{time.time()}\\n")
        n = len(open(path).read().split())
        print("run", n, flush=True)
        sys.exit(0 if n >= 4 else 3)
    """
    env.api.create(
        "pods",
        make_pod(
            "flaky",
            [
                {
                    "name": "main",
                    "command": [*py(code), "/work/starts"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }
            ],
            restartPolicy="OnFailure",
            volumes=[{"name": "work", "emptyDir": {}}],
        ),
    )
    saw_backoff = False

    def done() -> bool:
        nonlocal saw_backoff
        waiting = env.cstatus("flaky").get("state", {}).get("waiting") or {}
        saw_backoff = saw_backoff or waiting.get("reason") == "CrashLoopBackOff"
        return env.status("flaky").get("phase") == "Succeeded"

    await wait_for_async(done, timeout=20, interval=0.02)
    cs = env.cstatus("flaky")
    assert cs["restartCount"] == 3
    assert cs["state"]["terminated"]["reason"] == "Completed"
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert saw_backoff
    uid = env.api.get("pods", "flaky")["metadata"]["uid"]  # type: ignore[index]
    starts_file = paths.volume_dir(env.state, "default", "flaky", uid, "work") / "starts"
    starts = [float(x) for x in starts_file.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Back-off: immediate, then 0.2 s, then 0.4 s (plus process start-up each time).
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4
    assert env.log("flaky", "main").strip() == "run 4"
    assert env.log("flaky", "main", previous=True).strip() == "run 3"
    assert env.condition("flaky", "Ready") == "False"


async def test_deletion_sends_sigterm_then_sigkill_after_grace(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = """
        import os, signal, subprocess, sys, time
        out = sys.argv[1]
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
        )
        with open(os.path.join(out, "pids"), "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        def on_term(signum, frame):
            with open(os.path.join(out, "got-sigterm"), "w") as f:
                f.write(str(time.time()))
        signal.signal(signal.SIGTERM, on_term)
        while True:
            time.sleep(0.05)
    """
    env.api.create(
        "pods",
        make_pod(
            "stubborn",
            [
                {
                    "name": "main",
                    "command": [*py(code), "/out"],
                    "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                }
            ],
            volumes=[{"name": "out", "hostPath": {"path": str(out)}}],
            terminationGracePeriodSeconds=1,
        ),
    )
    await wait_for_async(lambda: (out / "pids").exists() and (out / "pids").read_text().strip())
    main_pid, child_pid = map(int, (out / "pids").read_text().split())
    assert alive(main_pid)
    assert alive(child_pid)
    t0 = time.time()
    env.api.mark_deleted("stubborn", grace=1)
    await wait_for_async(lambda: env.api.get("pods", "stubborn") is None, timeout=10)
    elapsed = time.time() - t0
    assert (out / "got-sigterm").exists()
    assert elapsed >= 1.0
    assert not alive(main_pid)
    await wait_for_async(lambda: not alive(child_pid), timeout=3)  # left the group: still killed


async def test_env_configmap_secret_volumes_and_workdir(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env.api.create(
        "configmaps", {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "a.txt": "A"}}
    )
    env.api.create(
        "services",
        {"metadata": {"name": "store"}, "spec": {"ports": [{"name": "c10d", "port": 29400}]}},
    )
    code = """
        import json, os, sys
        keys = ["MODE", "TOKEN", "ADDR", "OUT", "STORE_SERVICE_HOST", "STORE_SERVICE_PORT_C10D",
                "KUBERNETES_SERVICE_HOST", "HOSTNAME", "DEVCLUSTER_MOUNT_CFG", "PATH", "EXTRA"]
        data = {k: os.environ.get(k) for k in keys}
        data["argv"] = sys.argv[1:]
        data["cwd"] = os.getcwd()
        data["cfg"] = open(sys.argv[1]).read()
        data["secret_mode"] = oct(os.stat(sys.argv[2]).st_mode & 0o777)
        data["secret"] = open(sys.argv[2]).read()
        with open(os.path.join(os.environ["OUT"], "env.json"), "w") as f:
            json.dump(data, f)
    """
    env.api.create(
        "pods",
        make_pod(
            "cfg-pod",
            [
                {
                    "name": "main",
                    "command": py(code),
                    "args": ["/etc/cfg/a.txt", "/secrets/tok/token", "$(MODE)"],
                    "workingDir": "/scratch/sub",
                    "env": [
                        *POD_IP_ENV,
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}},
                        },
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}},
                        },
                        {"name": "ADDR", "value": "$(POD_IP):1234"},
                        {"name": "OUT", "value": "/out"},
                    ],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                        {"name": "tok", "mountPath": "/secrets/tok"},
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "out", "mountPath": "/out"},
                    ],
                }
            ],
            restartPolicy="Never",
            volumes=[
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "tok", "secret": {"secretName": "tok"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "out", "hostPath": {"path": str(out)}},
            ],
        ),
    )
    # The secret does not exist yet: the pod waits, then starts once it does.
    await wait_for_async(
        lambda: (env.cstatus("cfg-pod").get("state", {}).get("waiting") or {}).get("message")
    )
    waiting = env.cstatus("cfg-pod")["state"]["waiting"]
    assert 'secret "tok" not found' in waiting["message"]
    env.api.create(
        "secrets", {"metadata": {"name": "tok"}, "data": {"token": "czNjcjN0"}}
    )  # "s3cr3t"
    await wait_for_async(lambda: env.status("cfg-pod").get("phase") == "Succeeded", timeout=15)
    data = json.loads((out / "env.json").read_text())
    uid = env.api.get("pods", "cfg-pod")["metadata"]["uid"]  # type: ignore[index]
    vol = paths.volume_dir(env.state, "default", "cfg-pod", uid, "cfg")
    assert data["MODE"] == "fast"
    assert data["TOKEN"] == "s3cr3t"
    assert data["ADDR"] == env.status("cfg-pod")["podIP"] + ":1234"
    assert data["OUT"] == str(out)
    assert data["cfg"] == "A"
    assert data["secret"] == "s3cr3t"
    assert data["secret_mode"] == "0o600"
    assert data["argv"][0] == str(vol / "a.txt")
    assert data["argv"][2] == "fast"
    assert data["DEVCLUSTER_MOUNT_CFG"] == str(vol)
    assert data["cwd"] == str(
        paths.volume_dir(env.state, "default", "cfg-pod", uid, "scratch") / "sub"
    )
    assert data["STORE_SERVICE_HOST"] == env.api.get("services", "store")["spec"]["clusterIP"]  # type: ignore[index]
    assert data["STORE_SERVICE_PORT_C10D"] == "29400"
    assert data["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert data["HOSTNAME"] == "cfg-pod"
    assert data["PATH"] == os.environ["PATH"]
    assert data["EXTRA"] == "from-kubelet"


async def test_init_containers_run_first_in_order(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def step(word: str) -> JSON:
        return {
            "name": word,
            "command": py(f"open('/out/order', 'a').write('{word} ')"),
            "volumeMounts": [{"name": "out", "mountPath": "/out"}],
        }

    env.api.create(
        "pods",
        make_pod(
            "init",
            [step("main")],
            initContainers=[step("one"), step("two")],
            restartPolicy="OnFailure",
            volumes=[{"name": "out", "hostPath": {"path": str(out)}}],
        ),
    )
    await wait_for_async(lambda: env.status("init").get("phase") == "Succeeded", timeout=15)
    assert (out / "order").read_text() == "one two main "
    inits = env.status("init")["initContainerStatuses"]
    assert [c["name"] for c in inits] == ["one", "two"]
    assert all(c["state"]["terminated"]["reason"] == "Completed" for c in inits)
    assert env.condition("init", "Initialized") == "True"


async def test_liveness_failure_restarts_the_container(env: Env) -> None:
    env.api.create(
        "pods",
        make_pod(
            "sick",
            [
                {
                    "name": "main",
                    "command": py("import time; time.sleep(60)"),
                    "livenessProbe": {
                        "exec": {"command": ["python", "-c", "raise SystemExit(1)"]},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
            terminationGracePeriodSeconds=1,
        ),
    )
    await wait_for_async(lambda: env.cstatus("sick").get("restartCount", 0) >= 1, timeout=15)
    last = env.cstatus("sick")["lastState"]["terminated"]
    assert last["exitCode"] == 143
    assert last["signal"] == 15
    assert last["reason"] == "Error"


async def test_stop_kills_containers_and_vanished_pods_are_killed(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a", "b"):
        env.api.create(
            "pods",
            make_pod(
                name,
                [
                    {
                        "name": "main",
                        "command": py(
                            "import os, sys, time\n"
                            "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
                            "time.sleep(60)"
                        ),
                        "args": [f"/out/{name}"],
                        "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                    }
                ],
                volumes=[{"name": "out", "hostPath": {"path": str(out)}}],
            ),
        )
    await wait_for_async(lambda: all((out / n).exists() and (out / n).read_text() for n in "ab"))
    pid_a, pid_b = (int((out / n).read_text()) for n in "ab")
    ip_a = env.status("a")["podIP"]
    env.api.remove("pods", "a")  # force-deleted behind the kubelet's back
    await wait_for_async(lambda: not alive(pid_a), timeout=5)
    await wait_for_async(lambda: ip_a not in env.kubelet.ips.in_use)
    assert alive(pid_b)
    await env.kubelet.stop()
    assert not alive(pid_b)


async def test_survives_api_restart_and_410(env: Env) -> None:
    await wait_for_async(lambda: env.api.lists["pods"], what="the kubelet's first list of pods")
    lists = env.api.lists["pods"]
    await env.api.stop()
    env.api.compact()  # the kubelet's resourceVersion is now too old: 410 if it resumes
    await env.api.start(env.api.port)
    await wait_for_async(
        lambda: env.api.lists["pods"] > lists, what="the kubelet to relist pods after the restart"
    )
    env.api.create(
        "pods", make_pod("late", [{"name": "main", "command": py("pass")}], restartPolicy="Never")
    )
    await wait_for_async(lambda: env.status("late").get("phase") == "Succeeded", timeout=20)


async def test_simulate_mode_scales(tmp_path: Path) -> None:
    api = FakeAPI()
    url = await api.start()
    kubelet = Kubelet(url, tmp_path, simulate=True)
    await kubelet.start()
    try:
        n = 300
        for i in range(n):
            api.create(
                "pods",
                make_pod(
                    f"sim-{i}",
                    [{"name": "main", "image": "img"}],
                    initContainers=[{"name": "init"}],
                ),
            )

        def all_ready() -> bool:
            for i in range(n):
                st = (api.get("pods", f"sim-{i}") or {}).get("status") or {}
                if st.get("phase") != "Running":
                    return False
            return True

        await wait_for_async(all_ready, timeout=30)
        sts = [api.get("pods", f"sim-{i}")["status"] for i in range(n)]  # type: ignore[index]
        assert len({s["podIP"] for s in sts}) == n
        ready = {c["type"]: c["status"] for c in sts[0]["conditions"]}
        assert ready["Ready"] == "True"
        assert sts[0]["containerStatuses"][0]["state"]["running"]
        assert sts[0]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        patches = dict(api.pod_status_patches)
        # The kubelet handles events in order: once a pod created now runs, it has handled
        # the events of its own status writes above, and wrote nothing more for them.
        api.create("pods", make_pod("sim-later", [{"name": "main", "image": "img"}]))
        await wait_for_async(
            lambda: (
                (api.get("pods", "sim-later") or {}).get("status", {}).get("phase") == "Running"
            ),
            what="a pod created after the others to run",
        )
        assert {p: api.pod_status_patches[p] for p in patches} == patches  # no status churn
        for i in range(n):
            api.mark_deleted(f"sim-{i}", grace=30)
        api.mark_deleted("sim-later", grace=30)
        await wait_for_async(lambda: not [k for k in api.objects if k[0] == "pods"], timeout=30)
        await wait_for_async(lambda: not kubelet.ips.in_use)
    finally:
        await kubelet.stop()
        await api.stop()


async def test_restarted_kubelet_takes_over_pods(tmp_path: Path) -> None:
    """After a devcluster restart: running pods are restarted, finished ones are left alone."""
    api = FakeAPI()
    url = await api.start()
    stray = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(60)",
        env={**os.environ, "DEVCLUSTER_STATE_DIR": str(tmp_path), "DEVCLUSTER_CONTAINER_ID": "x"},
    )
    running = make_pod(
        "was-running", [{"name": "main", "command": py("import time; time.sleep(60)")}]
    )
    running["status"] = {
        "phase": "Running",
        "podIP": "127.10.0.77",
        "containerStatuses": [
            {"name": "main", "restartCount": 2, "state": {"running": {"startedAt": "x"}}}
        ],
    }
    done = make_pod("was-done", [{"name": "main", "command": py("raise SystemExit(1)")}])
    done["status"] = {
        "phase": "Succeeded",
        "podIP": "127.10.0.78",
        "containerStatuses": [
            {"name": "main", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}
        ],
    }
    api.create("pods", running)
    api.create("pods", done)
    kubelet = Kubelet(url, tmp_path, backoff_base=0.2)
    await kubelet.start()
    try:
        await asyncio.wait_for(stray.wait(), 5)  # the previous kubelet's leftover is killed

        def restarted() -> bool:
            cs = api.get("pods", "was-running")["status"]["containerStatuses"][0]  # type: ignore[index]
            return cs["restartCount"] == 3 and "running" in cs["state"]

        await wait_for_async(restarted)
        st = api.get("pods", "was-running")["status"]  # type: ignore[index]
        assert st["podIP"] == "127.10.0.77"
        assert st["containerStatuses"][0]["restartCount"] == 3
        assert st["containerStatuses"][0]["lastState"]["terminated"]["reason"] == (
            "ContainerStatusUnknown"
        )
        # The finished pod's IP is held once the kubelet has taken the pod over.
        await wait_for_async(
            lambda: "127.10.0.78" in kubelet.ips.in_use, what="the kubelet to adopt was-done"
        )
        assert api.get("pods", "was-done")["status"]["phase"] == "Succeeded"  # type: ignore[index]
        assert api.pod_status_patches["was-done"] == 0  # left alone: nothing re-run
    finally:
        await kubelet.stop()
        await api.stop()


async def test_probes_drive_readiness_and_deadline_fails_the_pod(env: Env, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    env.api.create(
        "pods",
        make_pod(
            "probed",
            [
                {
                    "name": "main",
                    "command": py("import time; time.sleep(60)"),
                    "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                    "readinessProbe": {
                        "exec": {"command": ["test", "-e", str(flag)]},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
            activeDeadlineSeconds=4,
            terminationGracePeriodSeconds=1,
        ),
    )
    await wait_for_async(lambda: env.cstatus("probed").get("started") is True, timeout=10)
    assert env.condition("probed", "Ready") == "False"
    flag.write_text("")
    await wait_for_async(lambda: env.condition("probed", "Ready") == "True", timeout=5)
    flag.unlink()
    await wait_for_async(lambda: env.condition("probed", "Ready") == "False", timeout=5)
    await wait_for_async(lambda: env.status("probed").get("phase") == "Failed", timeout=10)
    st = env.status("probed")
    assert st["reason"] == "DeadlineExceeded"
    assert "terminated" in st["containerStatuses"][0]["state"]
