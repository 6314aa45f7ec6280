"""A pod as the kubelet holds it: what simulated and real pods share.

`PodBase` holds the pod's identity, its API path, its pod IP (allocated from the
kubelet's range, or the host IP for hostNetwork pods) and the part of the status both
kinds report; `simulate.SimPod` and `pod.Pod` each render the rest. The `pod_*`
functions read the parts of a pod object tolerantly.
"""

from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from devcluster.podspec.common import JSON, rfc3339
from devcluster.podspec.status import qos_class

if TYPE_CHECKING:
    from devcluster.kubelet.node import Kubelet


def pod_meta(obj: JSON) -> JSON:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def pod_spec(obj: JSON) -> JSON:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def pod_status(obj: JSON) -> JSON:
    s = obj.get("status")
    return s if isinstance(s, dict) else {}


def grace_period(obj: JSON, default: float = 30.0) -> float:
    meta = pod_meta(obj)
    for value in (
        meta.get("deletionGracePeriodSeconds"),
        pod_spec(obj).get("terminationGracePeriodSeconds"),
    ):
        if isinstance(value, int | float):
            return max(0.0, float(value))
    return default


class PodBase(abc.ABC):
    """What simulated and real pods share; each renders its own status."""

    def __init__(self, kubelet: Kubelet, obj: JSON) -> None:
        self.kubelet = kubelet
        self.obj = obj
        meta = pod_meta(obj)
        self.uid = str(meta.get("uid", ""))
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta.get("name", ""))
        self.ip: str | None = None
        self._owns_ip = False
        self.start_time = pod_status(obj).get("startTime") or rfc3339(time.time())
        self.last_written: JSON | None = None

    @property
    def api_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(self.name)}"

    @abc.abstractmethod
    def render_status(self) -> JSON:
        """The pod's status as the kubelet reports it."""

    def _assign_ip(self) -> None:
        if self.ip is not None:
            return
        if pod_spec(self.obj).get("hostNetwork"):
            self.ip = self.kubelet.host_ip
        else:
            self.ip = self.kubelet.ips.allocate(pod_status(self.obj).get("podIP"))
            self._owns_ip = True

    def release_ip(self) -> None:
        if self.ip is not None and self._owns_ip:
            self.kubelet.ips.release(self.ip)
        self._owns_ip = False
        self.ip = None

    def _base_status(self) -> JSON:
        ip = self.ip or ""
        st: JSON = {
            "hostIP": self.kubelet.host_ip,
            "hostIPs": [{"ip": self.kubelet.host_ip}],
            "startTime": self.start_time,
            "qosClass": pod_status(self.obj).get("qosClass") or qos_class(self.obj),
        }
        if ip:
            st["podIP"] = ip
            st["podIPs"] = [{"ip": ip}]
        return st

    def _previous_conditions(self) -> list[JSON]:
        """Managed conditions as last written (the watch may lag), others as the API has them."""
        api = [c for c in pod_status(self.obj).get("conditions") or [] if isinstance(c, dict)]
        if self.last_written is None:
            return api
        mine = list(self.last_written.get("conditions") or [])
        mine_types = {c.get("type") for c in mine}
        return mine + [c for c in api if c.get("type") not in mine_types]
