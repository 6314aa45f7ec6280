"""Simulate mode: pods that are Running and Ready at once, with no processes.

A simulated pod gets a pod IP and the container statuses of a pod whose containers all
started (init containers completed); the kubelet writes its status once and deletes it
as soon as it gets a deletionTimestamp.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from devcluster.kubelet.base import PodBase, pod_spec
from devcluster.podspec.common import JSON, RUNTIME
from devcluster.podspec.status import pod_conditions

if TYPE_CHECKING:
    from devcluster.kubelet.node import Kubelet


class SimPod(PodBase):
    """A simulated pod: Running and Ready at once, no processes."""

    def __init__(self, kubelet: Kubelet, obj: JSON) -> None:
        super().__init__(kubelet, obj)
        self._assign_ip()

    def render_status(self) -> JSON:
        now = time.time()
        spec = pod_spec(self.obj)
        started = self.start_time

        def cstatus(c: JSON, init: bool) -> JSON:
            name = str(c.get("name", ""))
            state: JSON
            if init:
                state = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": started,
                        "finishedAt": started,
                        "containerID": f"{RUNTIME}://sim-{self.uid[:8]}-{name}",
                    }
                }
            else:
                state = {"running": {"startedAt": started}}
            return {
                "name": name,
                "state": state,
                "lastState": {},
                "ready": not init,
                "restartCount": 0,
                "image": str(c.get("image", "")),
                "imageID": str(c.get("image", "")),
                "containerID": f"{RUNTIME}://sim-{self.uid[:8]}-{name}",
                "started": not init,
            }

        inits = [c for c in spec.get("initContainers") or [] if isinstance(c, dict)]
        apps = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
        init_st = {str(c.get("name")): cstatus(c, True) for c in inits}
        app_st = {str(c.get("name")): cstatus(c, False) for c in apps}
        st = self._base_status()
        st["phase"] = "Running"
        st["conditions"] = pod_conditions(
            previous=self._previous_conditions(),
            sandbox_ready=True,
            init_names=list(init_st),
            init_statuses=init_st,
            names=list(app_st),
            statuses=app_st,
            phase="Running",
            readiness_gates=[str(g.get("conditionType")) for g in spec.get("readinessGates") or []],
            now=now,
        )
        st["containerStatuses"] = list(app_st.values())
        if init_st:
            st["initContainerStatuses"] = list(init_st.values())
        return st
