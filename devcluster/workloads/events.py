"""Events the workload controllers record, as `kubectl describe` shows them
(ScalingReplicaSet on a Deployment, SuccessfulCreate and SuccessfulDelete on a
ReplicaSet). One Event per occurrence: no aggregation into counts."""

from __future__ import annotations

import logging
import secrets

from devcluster.apiserver.options import Ctx
from devcluster.gc import ObjectAPI
from devcluster.store import APIError, Obj, rfc3339

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    """Writes core/v1 Events about objects, in the name of one controller."""

    def __init__(self, cluster: ObjectAPI, component: str) -> None:
        self.cluster = cluster
        self.component = component

    def record(self, obj: Obj, kind: str, reason: str, message: str) -> None:
        m = obj["metadata"]
        moment = rfc3339()
        event: Obj = {
            "metadata": {"name": f"{m['name']}.{secrets.token_hex(8)}"},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "namespace": m.get("namespace"),
                "name": m["name"],
                "uid": m.get("uid"),
                "resourceVersion": m.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": {"component": self.component},
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
            "type": kind,
            "reportingComponent": self.component,
            "reportingInstance": "",
        }
        rt = self.cluster.registry.get("", "v1", "events")
        if rt is None:
            return
        try:
            self.cluster.create(rt, m.get("namespace"), event, Ctx(system=True))
        except APIError as exc:  # a terminating namespace refuses events: not worth more
            log.debug("could not record event %s on %s: %s", reason, m["name"], exc.message)
