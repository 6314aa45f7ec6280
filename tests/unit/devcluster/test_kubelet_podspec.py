"""The pure side of the devcluster kubelet: env, expansion, mounts, back-off, status."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest

from devcluster import paths
from devcluster.podspec.common import ConfigError
from devcluster.podspec.env import (
    Sources,
    container_env,
    expand,
    field_value,
    kubernetes_service_env,
    parse_quantity,
    referenced_sources,
    service_env,
)
from devcluster.podspec.ips import IPAllocator
from devcluster.podspec.lifecycle import (
    backoff_delay,
    container_argv,
    exit_status,
    resolve_program,
    should_restart,
)
from devcluster.podspec.probes import parse_probe
from devcluster.podspec.status import compute_phase, pod_conditions
from devcluster.podspec.volumes import (
    PathRewriter,
    container_mounts,
    mount_env_name,
    volume_dirs,
    volume_files,
)

JSON = dict[str, Any]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


POD: JSON = {
    "metadata": {
        "name": "web-0",
        "namespace": "ns1",
        "uid": "u-1",
        "labels": {"app": "web", "elasticlm.io/role": "worker"},
        "annotations": {"note": 'say "hi"'},
    },
    "spec": {"nodeName": "devcluster", "containers": [{"name": "main"}]},
}


# -- $(VAR) expansion ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x$(A)y$(B)z", "xaybz"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$$", "$"),
        ("$", "$"),
        ("a$", "a$"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("$()", "$()"),
        ("$(A)$(A)", "aa"),
        ("no refs", "no refs"),
        ("$(A)-$$(B)-$(B)", "a-$(B)-b"),
    ],
)
def test_expand_like_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b"}) == expected


# -- environment -----------------------------------------------------------------------


def test_env_literal_fieldref_and_expansion_in_order() -> None:
    container = {
        "name": "main",
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "ROLE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['elasticlm.io/role']"}},
            },
            {"name": "ADDR", "value": "$(POD_IP):8080"},
            {"name": "LATER_REF", "value": "$(DEFINED_LATER)"},
            {"name": "DEFINED_LATER", "value": "x"},
            {"name": "SVC", "value": "$(DB_SERVICE_HOST)"},
            {"name": "ESCAPED", "value": "$$(POD_IP)"},
        ],
    }
    env = container_env(
        POD,
        container,
        pod_ip="127.10.0.7",
        host_ip="127.0.0.1",
        sources=Sources(),
        services_env={"DB_SERVICE_HOST": "127.12.0.1"},
    )
    assert env["POD_NAME"] == "web-0"
    assert env["POD_IP"] == "127.10.0.7"
    assert env["NS"] == "ns1"
    assert env["UID"] == "u-1"
    assert env["NODE"] == "devcluster"
    assert env["ROLE"] == "worker"
    assert env["ADDR"] == "127.10.0.7:8080"
    assert env["LATER_REF"] == "$(DEFINED_LATER)"  # only earlier variables expand
    assert env["SVC"] == "127.12.0.1"
    assert env["ESCAPED"] == "$(POD_IP)"
    assert env["DB_SERVICE_HOST"] == "127.12.0.1"


def test_env_configmap_secret_and_envfrom() -> None:
    sources = Sources(
        configmaps={
            "cfg": {"data": {"MODE": "fast", "bad key": "skipped", "LR": "0.1"}},
        },
        secrets={"tok": {"data": {"token": b64("s3cr3t\n"), "USER": b64("bob")}}, "gone": None},
    )
    container = {
        "name": "main",
        "envFrom": [
            {"configMapRef": {"name": "cfg"}},
            {"secretRef": {"name": "tok"}, "prefix": "S_"},
        ],
        "env": [
            {"name": "MODE", "value": "override-$(MODE)"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}},
            {"name": "LR2", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LR"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x", "optional": True}},
            },
        ],
    }
    env = container_env(POD, container, pod_ip="", host_ip="", sources=sources, services_env={})
    assert env["MODE"] == "override-fast"
    assert env["LR"] == "0.1"
    assert env["LR2"] == "0.1"
    assert "bad key" not in env
    assert env["S_USER"] == "bob"
    assert env["TOKEN"] == "s3cr3t\n"
    assert "OPT" not in env


def test_env_missing_sources_are_config_errors_without_values() -> None:
    sources = Sources(configmaps={"cfg": {"data": {"A": "1"}}}, secrets={"tok": None})
    with pytest.raises(ConfigError, match='secret "tok" not found'):
        container_env(
            POD,
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "k"}}}]},
            pod_ip="",
            host_ip="",
            sources=sources,
            services_env={},
        )
    with pytest.raises(ConfigError, match="couldn't find key B in ConfigMap ns1/cfg"):
        container_env(
            POD,
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}}]},
            pod_ip="",
            host_ip="",
            sources=sources,
            services_env={},
        )


def test_resource_field_ref() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "main", "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}
            ]
        },
    }
    env = container_env(
        pod,
        {
            "name": "main",
            "env": [
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {
                    "name": "MEM",
                    "valueFrom": {
                        "resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}
                    },
                },
            ],
        },
        pod_ip="",
        host_ip="",
        sources=Sources(),
        services_env={},
        allocatable={"cpu": 8, "memory": 2**34},
    )
    assert env == {"CPU": "2", "MEM": "1024"}
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("2Gi") == 2 * 2**30
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity("12 parsecs")


def test_field_value_labels_and_unsupported() -> None:
    assert field_value(POD, "metadata.labels['app']", "", "") == "web"
    assert field_value(POD, 'metadata.annotations["note"]', "", "") == 'say "hi"'
    assert field_value(POD, "metadata.labels", "", "") == ('app="web"\nelasticlm.io/role="worker"')
    with pytest.raises(ConfigError, match="unsupported fieldRef"):
        field_value(POD, "spec.containers", "", "")


def test_service_env_vars() -> None:
    services = [
        {
            "metadata": {"name": "rendez-vous"},
            "spec": {
                "clusterIP": "127.12.0.3",
                "ports": [{"name": "c10d", "port": 29400}, {"name": "http", "port": 80}],
            },
        },
        {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
    ]
    env = service_env(services)
    assert env["RENDEZ_VOUS_SERVICE_HOST"] == "127.12.0.3"
    assert env["RENDEZ_VOUS_SERVICE_PORT"] == "29400"
    assert env["RENDEZ_VOUS_SERVICE_PORT_C10D"] == "29400"
    assert env["RENDEZ_VOUS_SERVICE_PORT_HTTP"] == "80"
    assert env["RENDEZ_VOUS_PORT"] == "tcp://127.12.0.3:29400"
    assert env["RENDEZ_VOUS_PORT_80_TCP_ADDR"] == "127.12.0.3"
    assert not any(k.startswith("HEADLESS") for k in env)
    k8s = kubernetes_service_env("127.0.0.1", 6443)
    assert k8s["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert k8s["KUBERNETES_SERVICE_PORT"] == "6443"


# -- commands --------------------------------------------------------------------------


def test_argv_expansion_and_python() -> None:
    env = {"PORT": "8080"}
    assert container_argv({"command": ["python3", "-m", "x"], "args": ["--port=$(PORT)"]}, env) == [
        "python3",
        "-m",
        "x",
        "--port=8080",
    ]
    assert container_argv({"args": ["python", "-c", "pass"]}, env) == ["python", "-c", "pass"]
    with pytest.raises(ConfigError, match="neither command nor args"):
        container_argv({}, env)
    assert resolve_program("python", None) == sys.executable
    assert resolve_program("python3.11", None) == sys.executable
    assert resolve_program("/bin/sh", None) == "/bin/sh"
    assert resolve_program("no-such-program-xyz", "/usr/bin") == "no-such-program-xyz"
    venv_bin = Path(sys.executable).parent
    if (venv_bin / "pytest").exists():
        assert resolve_program("pytest", "/usr/bin") == str(venv_bin / "pytest")


# -- volumes and mounts ----------------------------------------------------------------


def test_path_rewriter_whole_tokens_longest_first() -> None:
    rw = PathRewriter([("/data", "/L/d"), ("/data/ckpt/", "/L/c"), ("/", "/nope")])
    assert rw("/data") == "/L/d"
    assert rw("/data/x/y") == "/L/d/x/y"
    assert rw("/data/ckpt") == "/L/c"
    assert rw("/data/ckpt/step-1") == "/L/c/step-1"
    assert rw("/data/ckptx") == "/L/d/ckptx"
    assert rw("--out=/data/ckpt") == "--out=/L/c"
    assert rw("a:/data:/data/ckpt") == "a:/L/d:/L/c"
    assert rw("'/data'") == "'/L/d'"
    assert rw("/database") == "/database"
    assert rw("/data.bak") == "/data.bak"
    assert rw("/x/data") == "/x/data"
    assert rw("$HOME/data") == "$HOME/data"
    assert rw("s3://bucket/data") == "s3://bucket/data"
    assert rw("/etc/passwd") == "/etc/passwd"


def test_path_rewriter_rewrites_once() -> None:
    # The local directory itself starts with the mount path: no double rewrite.
    rw = PathRewriter([("/tmp", "/tmp/state/volumes/tmp")])
    assert rw("/tmp/x") == "/tmp/state/volumes/tmp/x"


def test_volume_dirs_and_mounts(tmp_path: Path) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "ckpt", "persistentVolumeClaim": {"claimName": "claim-1"}},
                {"name": "host", "hostPath": {"path": "/opt/data"}},
            ],
        },
    }
    dirs = volume_dirs(pod, tmp_path)
    assert dirs["scratch"] == paths.volume_dir(tmp_path, "ns", "p", "u", "scratch")
    assert dirs["ckpt"] == paths.claim_dir(tmp_path, "ns", "claim-1")
    assert dirs["host"] == Path("/opt/data")
    mounts = container_mounts(
        {
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "ckpt", "mountPath": "/ckpt", "subPath": "job-a"},
            ]
        },
        dirs,
    )
    assert mounts == [("/scratch", dirs["scratch"]), ("/ckpt", dirs["ckpt"] / "job-a")]
    with pytest.raises(ConfigError, match="no volume"):
        container_mounts({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, dirs)
    assert mount_env_name("my-vol.1") == "DEVCLUSTER_MOUNT_MY_VOL_1"


def test_volume_files() -> None:
    sources = Sources(
        configmaps={"cfg": {"data": {"a.yaml": "x: 1", "b": "2"}}},
        secrets={"tls": {"data": {"key": b64("PRIVATE"), "crt": b64("CERT")}}},
    )
    cm = volume_files({"configMap": {"name": "cfg"}}, POD, sources, pod_ip="", host_ip="")
    assert cm == {"a.yaml": (b"x: 1", 0o644), "b": (b"2", 0o644)}
    items = volume_files(
        {"configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/b.txt", "mode": 0o600}]}},
        POD,
        sources,
        pod_ip="",
        host_ip="",
    )
    assert items == {"sub/b.txt": (b"2", 0o600)}
    sec = volume_files({"secret": {"secretName": "tls"}}, POD, sources, pod_ip="", host_ip="")
    assert sec == {"key": (b"PRIVATE", 0o600), "crt": (b"CERT", 0o600)}
    assert volume_files({"emptyDir": {}}, POD, sources, pod_ip="", host_ip="") is None
    down = volume_files(
        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        POD,
        sources,
        pod_ip="",
        host_ip="",
    )
    assert down == {"name": (b"web-0", 0o644)}
    assert (
        volume_files(
            {"secret": {"secretName": "nope", "optional": True}},
            POD,
            sources,
            pod_ip="",
            host_ip="",
        )
        == {}
    )
    with pytest.raises(ConfigError, match='configmap "nope" not found'):
        volume_files(
            {"configMap": {"name": "nope"}},
            POD,
            Sources(configmaps={"nope": None}),
            pod_ip="",
            host_ip="",
        )
    with pytest.raises(ConfigError, match="invalid volume item path"):
        volume_files(
            {"configMap": {"name": "cfg", "items": [{"key": "b", "path": "../escape"}]}},
            POD,
            sources,
            pod_ip="",
            host_ip="",
        )


def test_referenced_sources() -> None:
    pod = {
        "spec": {
            "initContainers": [{"envFrom": [{"secretRef": {"name": "s1"}}]}],
            "containers": [
                {
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}
                    ]
                }
            ],
            "volumes": [
                {"name": "v", "configMap": {"name": "c2"}},
                {"name": "w", "projected": {"sources": [{"secret": {"name": "s2"}}]}},
            ],
        }
    }
    assert referenced_sources(pod) == ({"c1", "c2"}, {"s1", "s2"})


# -- restart policy and back-off -------------------------------------------------------


def test_backoff_schedule() -> None:
    # Kubernetes: restart 1 immediate, then 10 s doubling to 300 s.
    assert [backoff_delay(n, 10, 300) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert [backoff_delay(n, 1, 30) for n in range(1, 8)] == [0, 1, 2, 4, 8, 16, 30]


def test_restart_policy_and_exit_status() -> None:
    assert should_restart("Always", 0)
    assert should_restart("Always", 1)
    assert not should_restart("OnFailure", 0)
    assert should_restart("OnFailure", 2)
    assert not should_restart("Never", 1)
    assert exit_status(0) == (0, None)
    assert exit_status(3) == (3, None)
    assert exit_status(-15) == (143, 15)
    assert exit_status(-9) == (137, 9)


# -- probes ----------------------------------------------------------------------------


def test_parse_probe_defaults_and_named_ports() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    p = parse_probe("readiness", {"httpGet": {"path": "healthz", "port": "http"}}, container)
    assert p is not None
    assert (p.handler, p.port, p.path, p.scheme) == ("httpGet", 8080, "/healthz", "HTTP")
    assert (p.initial_delay, p.period, p.timeout) == (0, 10, 1)
    assert (p.success_threshold, p.failure_threshold) == (1, 3)
    p = parse_probe(
        "liveness",
        {
            "tcpSocket": {"port": 99},
            "periodSeconds": 2,
            "successThreshold": 5,
            "failureThreshold": 1,
        },
        container,
    )
    assert p is not None
    assert p.port == 99
    assert p.period == 2
    assert p.success_threshold == 1  # must be 1 for liveness
    p = parse_probe("readiness", {"exec": {"command": ["true"]}, "successThreshold": 2}, container)
    assert p is not None
    assert p.command == ("true",)
    assert p.success_threshold == 2
    p = parse_probe("startup", {"httpGet": {"port": "nope"}}, container)
    assert p is not None
    assert p.error == "unknown port 'nope'"
    assert parse_probe("readiness", None, container) is None


# -- status ----------------------------------------------------------------------------


def running() -> JSON:
    return {"state": {"running": {"startedAt": "t"}}, "lastState": {}}


def terminated(code: int) -> JSON:
    return {"state": {"terminated": {"exitCode": code}}, "lastState": {}}


def backing_off(code: int) -> JSON:
    return {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": code}},
    }


def creating() -> JSON:
    return {"state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}


@pytest.mark.parametrize(
    ("policy", "statuses", "terminal", "phase"),
    [
        ("Always", {"a": creating()}, False, "Pending"),
        ("Always", {"a": running()}, False, "Running"),
        ("Always", {"a": running(), "b": creating()}, False, "Pending"),
        ("Always", {"a": terminated(0)}, False, "Running"),
        ("Always", {"a": backing_off(1)}, False, "Running"),
        ("OnFailure", {"a": terminated(0), "b": terminated(0)}, False, "Succeeded"),
        ("OnFailure", {"a": terminated(0), "b": backing_off(2)}, False, "Running"),
        ("Never", {"a": terminated(0), "b": terminated(1)}, False, "Failed"),
        ("Never", {"a": terminated(0), "b": running()}, False, "Running"),
        ("Always", {"a": terminated(143)}, True, "Failed"),
        ("Always", {"a": terminated(0)}, True, "Succeeded"),
        ("Always", {"a": creating()}, True, "Failed"),
        ("Always", {}, False, "Pending"),
    ],
)
def test_compute_phase(policy: str, statuses: dict[str, JSON], terminal: bool, phase: str) -> None:
    names = list(statuses) or ["a"]
    assert compute_phase(policy, [], {}, names, statuses, terminal=terminal) == phase


def test_compute_phase_init_containers() -> None:
    apps = {"a": {"state": {"waiting": {"reason": "PodInitializing"}}, "lastState": {}}}
    assert compute_phase("Always", ["i"], {"i": running()}, ["a"], apps) == "Pending"
    assert compute_phase("Never", ["i"], {"i": terminated(1)}, ["a"], apps) == "Failed"
    assert compute_phase("OnFailure", ["i"], {"i": backing_off(1)}, ["a"], apps) == "Pending"
    assert (
        compute_phase("Always", ["i"], {"i": terminated(0)}, ["a"], {"a": running()}) == "Running"
    )


def test_pod_conditions_transitions() -> None:
    apps = {"a": {**running(), "ready": False}}
    conds = pod_conditions(
        previous=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"}],
        sandbox_ready=True,
        init_names=["i"],
        init_statuses={"i": terminated(0)},
        names=["a"],
        statuses=apps,
        phase="Running",
        now=1000.0,
    )
    by = {c["type"]: c for c in conds}
    assert by["Initialized"]["status"] == "True"
    assert by["Ready"]["status"] == "False"
    assert by["Ready"]["reason"] == "ContainersNotReady"
    assert by["Ready"]["message"] == "containers with unready status: [a]"
    assert by["PodScheduled"]["lastTransitionTime"] == "T0"
    assert by["PodReadyToStartContainers"]["status"] == "True"
    apps["a"]["ready"] = True
    later = pod_conditions(
        previous=conds,
        sandbox_ready=True,
        init_names=["i"],
        init_statuses={"i": terminated(0)},
        names=["a"],
        statuses=apps,
        phase="Running",
        now=2000.0,
    )
    by2 = {c["type"]: c for c in later}
    assert by2["Ready"]["status"] == "True"
    assert by2["Ready"]["lastTransitionTime"] != by["Ready"]["lastTransitionTime"]
    assert by2["Initialized"]["lastTransitionTime"] == by["Initialized"]["lastTransitionTime"]
    done = pod_conditions(
        previous=later,
        sandbox_ready=True,
        init_names=[],
        init_statuses={},
        names=["a"],
        statuses={"a": terminated(0)},
        phase="Succeeded",
        now=3000.0,
    )
    assert {c["type"]: c.get("reason") for c in done}["Ready"] == "PodCompleted"


def test_readiness_gates() -> None:
    kw: Any = {
        "sandbox_ready": True,
        "init_names": [],
        "init_statuses": {},
        "names": ["a"],
        "statuses": {"a": {**running(), "ready": True}},
        "phase": "Running",
        "readiness_gates": ["example.com/gate"],
        "now": 0.0,
    }
    conds = pod_conditions(previous=[], **kw)
    assert {c["type"]: c["status"] for c in conds}["Ready"] == "False"
    gate = {"type": "example.com/gate", "status": "True"}
    conds = pod_conditions(previous=[gate], **kw)
    statuses = {c["type"]: c["status"] for c in conds}
    assert statuses["Ready"] == "True"
    assert statuses["example.com/gate"] == "True"


# -- pod IPs ---------------------------------------------------------------------------


def test_ip_allocator() -> None:
    ips = IPAllocator("127.10.0.0/29", start=0)  # hosts .2 .. .6
    got = [ips.allocate() for _ in range(5)]
    assert got == [f"127.10.0.{i}" for i in range(2, 7)]
    with pytest.raises(RuntimeError, match="no free pod IP"):
        ips.allocate()
    ips.release("127.10.0.3")
    assert ips.allocate() == "127.10.0.3"
    ips.release("127.10.0.5")
    assert ips.allocate("127.10.0.5") == "127.10.0.5"
    with pytest.raises(ValueError, match="not a loopback"):
        IPAllocator("10.0.0.0/24")
    big = IPAllocator(start=0)
    first = big.allocate()
    assert first == "127.10.0.2"
    big.release(first)
    assert big.allocate() == "127.10.0.3"  # released addresses are reused last
    rand = IPAllocator()
    assert rand.allocate() in rand
