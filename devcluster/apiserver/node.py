"""The Node object devcluster registers for its one node."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

from devcluster.store import Obj, rfc3339


def node_object(node_name: str, kubernetes_version: str) -> Obj:
    cpus = os.cpu_count() or 1
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    machine = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    capacity = {"cpu": str(cpus), "memory": f"{memory_kib}Ki", "pods": "10000"}
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
