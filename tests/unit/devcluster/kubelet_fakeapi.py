"""A tiny fake Kubernetes API for the kubelet and proxy tests.

Just enough of the REST API: list and watch (all namespaces or one, resourceVersion,
timeoutSeconds, 410 Gone after `compact()`), get, create, merge-patch of pod status,
and delete with grace periods and uid preconditions, for pods, configmaps, secrets,
services, endpoints and events. Pods are bound to node "devcluster" on create.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

JSON = dict[str, Any]

RESOURCES = {
    "pods": "Pod",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services": "Service",
    "endpoints": "Endpoints",
    "events": "Event",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


class FakeAPI:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.rv = 1
        self.history: list[tuple[int, str, str, JSON]] = []
        self.oldest = 0
        self.status_patches = 0
        #: Status patches by pod name, and lists (not watches) by resource.
        self.pod_status_patches: collections.Counter[str] = collections.Counter()
        self.lists: collections.Counter[str] = collections.Counter()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.next_cluster_ip = 1
        self.cluster_net = random.randrange(256)  # parallel test runs rarely collide

    # -- direct manipulation for tests --------------------------------------------------

    def _emit(self, resource: str, etype: str, obj: JSON) -> None:
        self.history.append((self.rv, resource, etype, copy.deepcopy(obj)))

    def put(self, resource: str, obj: JSON, etype: str | None = None) -> JSON:
        meta = obj.setdefault("metadata", {})
        ns = meta.setdefault("namespace", "default")
        key = (resource, ns, meta["name"])
        existed = key in self.objects
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        obj.setdefault("kind", RESOURCES[resource])
        obj.setdefault("apiVersion", "v1")
        self.objects[key] = obj
        self._emit(resource, etype or ("MODIFIED" if existed else "ADDED"), obj)
        return obj

    def create(self, resource: str, obj: JSON) -> JSON:
        obj = copy.deepcopy(obj)
        if resource == "pods":
            obj.setdefault("spec", {}).setdefault("nodeName", "devcluster")
            obj.setdefault("status", {"phase": "Pending"})
        if resource == "services":
            spec = obj.setdefault("spec", {})
            if "clusterIP" not in spec:
                spec["clusterIP"] = f"127.12.{self.cluster_net}.{self.next_cluster_ip}"
                self.next_cluster_ip += 1
        return self.put(resource, obj)

    def get(self, resource: str, name: str, ns: str = "default") -> JSON | None:
        return self.objects.get((resource, ns, name))

    def remove(self, resource: str, name: str, ns: str = "default") -> JSON | None:
        obj = self.objects.pop((resource, ns, name), None)
        if obj is not None:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._emit(resource, "DELETED", obj)
        return obj

    def mark_deleted(self, name: str, grace: int, ns: str = "default") -> None:
        obj = self.objects[("pods", ns, name)]
        obj["metadata"]["deletionTimestamp"] = _now()
        obj["metadata"]["deletionGracePeriodSeconds"] = grace
        self.put("pods", obj)

    def compact(self) -> None:
        """Forget the event history: watches from older versions get 410 Gone."""
        self.history.clear()
        self.oldest = self.rv

    # -- HTTP ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v1/{resource}", self.h_list)
        r.add_get("/api/v1/namespaces/{ns}/{resource}", self.h_list)
        r.add_post("/api/v1/namespaces/{ns}/{resource}", self.h_create)
        r.add_get("/api/v1/namespaces/{ns}/{resource}/{name}", self.h_get)
        r.add_delete("/api/v1/namespaces/{ns}/{resource}/{name}", self.h_delete)
        r.add_patch("/api/v1/namespaces/{ns}/pods/{name}/status", self.h_patch_status)
        return app

    async def start(self, port: int = 0) -> str:
        self.runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port or self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @staticmethod
    def _error(code: int, reason: str, message: str = "") -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message or reason,
        }
        return web.json_response(body, status=code)

    def _items(self, resource: str, ns: str | None, field_selector: str) -> list[JSON]:
        out = []
        for (res, ons, _), obj in sorted(self.objects.items()):
            if res != resource or (ns is not None and ons != ns):
                continue
            node = field_selector.split("=", 1)[1] if "=" in field_selector else None
            if node is not None and (obj.get("spec") or {}).get("nodeName") != node:
                continue
            out.append(obj)
        return out

    async def h_list(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        if resource not in RESOURCES:
            return self._error(404, "NotFound")
        ns = request.match_info.get("ns")
        fs = request.query.get("fieldSelector", "")
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, resource, ns, fs)
        self.lists[resource] += 1
        return web.json_response(
            {
                "kind": RESOURCES[resource] + "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": self._items(resource, ns, fs),
            }
        )

    async def _watch(
        self, request: web.Request, resource: str, ns: str | None, fs: str
    ) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or self.rv)
        timeout = float(request.query.get("timeoutSeconds") or 60)
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        if since < self.oldest:
            err = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Gone"}}
            await resp.write(json.dumps(err).encode() + b"\n")
            return resp
        with contextlib.suppress(ConnectionError):
            await self._stream(resp, resource, ns, fs, since, time.monotonic() + timeout)
        return resp

    async def _stream(
        self,
        resp: web.StreamResponse,
        resource: str,
        ns: str | None,
        fs: str,
        since: int,
        deadline: float,
    ) -> None:
        sent = since
        while time.monotonic() < deadline:
            for rv, res, etype, obj in list(self.history):
                if rv <= sent or res != resource:
                    continue
                sent = rv
                meta = obj.get("metadata") or {}
                if ns is not None and meta.get("namespace") != ns:
                    continue
                if (
                    fs.startswith("spec.nodeName=")
                    and (obj.get("spec") or {}).get("nodeName") != fs.split("=", 1)[1]
                ):
                    continue
                await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            await asyncio.sleep(0.02)

    async def h_get(self, request: web.Request) -> web.Response:
        obj = self.get(
            request.match_info["resource"], request.match_info["name"], request.match_info["ns"]
        )
        if obj is None:
            return self._error(404, "NotFound")
        return web.json_response(obj)

    async def h_create(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        body = await request.json()
        body.setdefault("metadata", {})["namespace"] = request.match_info["ns"]
        if self.get(resource, body["metadata"]["name"], request.match_info["ns"]) is not None:
            return self._error(409, "AlreadyExists")
        return web.json_response(self.create(resource, body), status=201)

    async def h_patch_status(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = self.get("pods", name, ns)
        if obj is None:
            return self._error(404, "NotFound")
        patch = await request.json()
        uid = (patch.get("metadata") or {}).get("uid")
        if uid and uid != obj["metadata"]["uid"]:
            return self._error(409, "Conflict", "uid precondition failed")
        self.status_patches += 1
        self.pod_status_patches[name] += 1
        obj["status"] = merge_patch(obj.get("status") or {}, patch.get("status") or {})
        return web.json_response(self.put("pods", obj))

    async def h_delete(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = self.get(resource, name, ns)
        if obj is None:
            return self._error(404, "NotFound")
        body: JSON = {}
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
        pre = (body.get("preconditions") or {}).get("uid")
        if pre and pre != obj["metadata"]["uid"]:
            return self._error(409, "Conflict", "uid precondition failed")
        grace = request.query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        if resource == "pods" and grace is not None and int(grace) > 0:
            self.mark_deleted(name, int(grace), ns)
            return web.json_response(obj)
        self.remove(resource, name, ns)
        return web.json_response(obj)
