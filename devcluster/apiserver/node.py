"""The Node object devcluster registers for its one node."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

from devcluster.scheduling import DEFAULT_NODE_CPU, DEFAULT_NODE_MEMORY
from devcluster.store import Obj, rfc3339


def machine_resources() -> tuple[str, str]:
    """This machine's CPUs and memory, as quantities."""
    cpus = os.cpu_count() or 1
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return str(cpus), f"{memory_kib}Ki"


def node_object(
    node_name: str,
    kubernetes_version: str,
    *,
    cpu: str = DEFAULT_NODE_CPU,
    memory: str = DEFAULT_NODE_MEMORY,
) -> Obj:
    """The Node, offering `cpu` and `memory` to pods (capacity = allocatable): what the
    scheduler fits pods' requests into (devcluster/scheduling.py). The defaults are
    larger than this machine, so requests decide nothing unless a test says so; the
    machine's own figures are in the `devcluster.elasticlm.io/machine-*` annotations."""
    machine_cpu, machine_memory = machine_resources()
    machine = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    capacity = {"cpu": cpu, "memory": memory, "pods": "10000"}
    stamp = rfc3339()
    return {
        "metadata": {
            "name": node_name,
            "labels": {
                "kubernetes.io/hostname": node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
                "node-role.kubernetes.io/control-plane": "",
            },
            "annotations": {
                "devcluster.elasticlm.io/machine-cpu": machine_cpu,
                "devcluster.elasticlm.io/machine-memory": machine_memory,
            },
        },
        "spec": {"podCIDR": "127.10.0.0/16"},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node_name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "devcluster kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": kubernetes_version,
                "kubeProxyVersion": kubernetes_version,
                "operatingSystem": "linux",
                "architecture": arch,
                "osImage": platform.platform(),
                "kernelVersion": platform.release(),
                "containerRuntimeVersion": "devcluster://local-processes",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
