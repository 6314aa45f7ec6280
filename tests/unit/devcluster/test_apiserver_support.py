"""Helpers of the devcluster API server tests (no tests here): an in-process client, samples."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import test_utils, web

from devcluster.apiserver.app import CLUSTER_KEY, CONTROLLERS_KEY, create_app
from devcluster.apiserver.cluster import Cluster
from devcluster.gc import Controllers
from lmoperator.api.kinds import TRAINING_JOB
from tests.crds import project_crds

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]
# The plain example of a kind (training-job.yaml) before its variants
# (training-job-autoscaled.yaml): `example(kind)` returns the first.
EXAMPLES = sorted(
    (ROOT / "manifests" / "examples").glob("*.yaml"), key=lambda p: (len(p.stem), p.name)
)

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def load_yaml(path: Path) -> list[JSON]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd(name: str) -> JSON:
    for doc in project_crds():
        if doc["metadata"]["name"] == name:
            return doc
    raise KeyError(name)


def example(kind: str) -> JSON:
    for path in EXAMPLES:
        for doc in load_yaml(path):
            if doc["kind"] == kind:
                return doc
    raise KeyError(kind)


class Reply:
    def __init__(self, status: int, body: Any, headers: Any) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    @property
    def warnings(self) -> list[str]:
        return list(self.headers.getall("Warning", []))

    def __repr__(self) -> str:
        return f"Reply({self.status}, {json.dumps(self.body)[:400]})"


class Api:
    """A thin JSON client over aiohttp's test client."""

    def __init__(
        self, client: test_utils.TestClient[web.Request, web.Application], app: web.Application
    ):
        self.client = client
        self.app = app

    @property
    def cluster(self) -> Cluster:
        return self.app[CLUSTER_KEY]

    @property
    def controllers(self) -> Controllers:
        return self.app[CONTROLLERS_KEY]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        raw: bytes | str | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {"Content-Type": content_type, **(headers or {})}
        data: bytes | str | None = raw
        if body is not None:
            data = json.dumps(body)
        async with self.client.request(
            method, path, data=data, headers=all_headers, params=params
        ) as response:
            text = await response.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text
            return Reply(response.status, parsed, response.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> Reply:
        return await self.call("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, kind: str = "merge", **kw: Any) -> Reply:
        content_type = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[kind]
        return await self.call("PATCH", path, body, content_type=content_type, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("DELETE", path, body, **kw)

    async def settle(self) -> None:
        """Run the built-in controllers' passes until none is pending."""
        self.controllers.run_pending()

    async def watch(
        self,
        path: str,
        params: dict[str, str],
        *,
        count: int | None = None,
        headers: Any = None,
        then: Callable[[], Awaitable[object]] | None = None,
    ) -> list[JSON]:
        """Read watch events until the stream ends or `count` events arrived.

        `then` runs once the first event has arrived, that is once the watch has started:
        the changes it makes are live events of this watch.
        """
        events: list[JSON] = []
        query = {"watch": "true", **params}
        async with self.client.get(path, params=query, headers=headers or {}) as response:
            assert response.status == 200, await response.text()
            async for line in response.content:
                if line.strip():
                    events.append(json.loads(line))
                    if then is not None and len(events) == 1:
                        await then()
                if count is not None and len(events) >= count:
                    break
        return events

    async def install_crds(self) -> None:
        """This project's CRDs (tests.crds.project_crds); the in-process API server
        establishes a CRD as it creates it."""
        for doc in project_crds():
            reply = await self.post(CRD_PATH, doc)
            assert reply.status == 201, reply
            conditions = {c["type"]: c["status"] for c in reply["status"]["conditions"]}
            assert conditions.get("Established") == "True", reply


async def api_client(tmp_path: Path, **options: Any) -> AsyncIterator[Api]:
    app = create_app(tmp_path, **options)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield Api(client, app)


def configmap(name: str, **data: str) -> JSON:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> JSON:
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "python:3.11"}], **spec},
    }
    return body


CM = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"
SVCS = "/api/v1/namespaces/default/services"
LMTJ = TRAINING_JOB.path("default")
LMS = "/apis/elasticlm.io/v1alpha1/namespaces/default/lmservices"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
