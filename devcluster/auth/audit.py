"""The audit log: one JSON line per request, in the shape of Kubernetes' audit events
(audit.k8s.io/v1 `Event` at level `Metadata`, stage `ResponseComplete`; see
staging/src/k8s.io/apiserver/pkg/apis/audit/types.go), so that tools reading
kube-apiserver's `--audit-log-path` read devcluster's too.

Each line has `auditID`, `requestURI`, `verb` (the authorization verb: get, list, watch,
create, update, patch, delete, deletecollection; the lower-case method for non-resource
paths), `user` {username, uid, groups, extra} (and `impersonatedUser` when the request
impersonated someone), `sourceIPs`, `userAgent`, `objectRef`
{resource, subresource, namespace, name, apiGroup, apiVersion} for resource requests,
`responseStatus` {code, and reason and message for failures},
`requestReceivedTimestamp`, `stageTimestamp` and the `authorization.k8s.io/decision`
and `authorization.k8s.io/reason` annotations. Request and response bodies are never
written (level Metadata), so secrets and tokens stay out of the log. A watch is written
when it ends.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from devcluster.auth.requestinfo import Attributes
from devcluster.auth.users import UserInfo

log = logging.getLogger(__name__)


def micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event(
    *,
    audit_id: str,
    request_uri: str,
    attrs: Attributes | None,
    user: UserInfo | None,
    source_ip: str,
    user_agent: str,
    code: int,
    status: dict[str, Any] | None,
    received: datetime,
    completed: datetime,
    decision: str = "",
    reason: str = "",
    method: str = "",
    impersonated: UserInfo | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": request_uri,
        "verb": attrs.verb if attrs is not None else method.lower(),
        "user": user.as_json() if user is not None else {},
        "sourceIPs": [source_ip] if source_ip else [],
        "userAgent": user_agent,
    }
    if impersonated is not None:
        event["impersonatedUser"] = impersonated.as_json()
    if attrs is not None and attrs.resource_request:
        ref = {
            "resource": attrs.resource,
            "subresource": attrs.subresource,
            "namespace": attrs.namespace,
            "name": attrs.name,
            "apiGroup": attrs.api_group,
            "apiVersion": attrs.api_version,
        }
        event["objectRef"] = {k: v for k, v in ref.items() if v}
    response: dict[str, Any] = {"metadata": {}, "code": code}
    if status is not None and status.get("status") == "Failure":
        for key in ("status", "message", "reason"):
            if status.get(key):
                response[key] = status[key]
    event["responseStatus"] = response
    event["requestReceivedTimestamp"] = micro_time(received)
    event["stageTimestamp"] = micro_time(completed)
    annotations: dict[str, str] = {}
    if decision:
        annotations["authorization.k8s.io/decision"] = decision
        annotations["authorization.k8s.io/reason"] = reason
    if annotations:
        event["annotations"] = annotations
    return event


class AuditLog:
    """Appends events to a file as JSON lines (`-` writes to standard output)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def open(self) -> None:
        if self._file is not None:
            return
        if self.path == "-":
            import sys

            self._file = sys.stdout
            return
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = target.open("a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self.open()
            assert self._file is not None
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as exc:  # a full disk must not fail requests
                log.warning("could not write the audit log %s: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._file is not None and self.path != "-":
                self._file.close()
            self._file = None
