"""The API server's request counter (`apiserver_request_total` at /metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devcluster.requestmetrics import RequestInfo, client_of, request_info
from tests.unit.devcluster.test_apiserver_support import CM, Api, api_client, configmap


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for client in api_client(tmp_path):
        yield client


LMTJ_SCALE = "/apis/elasticlm.io/v1alpha1/namespaces/ns/lmtrainingjobs/j/scale"


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        ("GET /api/v1/namespaces/ns/pods", "LIST  v1 pods - namespace"),
        ("GET /api/v1/namespaces/ns/pods?watch=true", "WATCH  v1 pods - namespace"),
        ("GET /api/v1/watch/namespaces/ns/pods", "WATCH  v1 pods - namespace"),
        ("GET /api/v1/pods?watch=1", "WATCH  v1 pods - cluster"),
        ("GET /api/v1/namespaces/ns/pods/p", "GET  v1 pods - resource"),
        ("GET /api/v1/namespaces/ns/pods/p/log", "GET  v1 pods log resource"),
        ("PATCH /api/v1/namespaces/ns/pods/p/status", "PATCH  v1 pods status resource"),
        ("POST /api/v1/namespaces/ns/events", "POST  v1 events - namespace"),
        ("PUT /api/v1/namespaces/ns/configmaps/c", "PUT  v1 configmaps - resource"),
        ("DELETE /api/v1/namespaces/ns/pods/p", "DELETE  v1 pods - resource"),
        ("DELETE /api/v1/namespaces/ns/pods", "DELETECOLLECTION  v1 pods - namespace"),
        ("GET /api/v1/namespaces/ns", "GET  v1 namespaces - resource"),
        ("PUT /api/v1/namespaces/ns/finalize", "PUT  v1 namespaces finalize resource"),
        ("GET /api/v1/namespaces", "LIST  v1 namespaces - cluster"),
        (f"PATCH {LMTJ_SCALE}", "PATCH elasticlm.io v1alpha1 lmtrainingjobs scale resource"),
        ("GET /apis/elasticlm.io/v1alpha1", "GET elasticlm.io v1alpha1 - - -"),
        ("GET /version", "GET - - - - -"),
        ("GET /metrics", "GET - - - - -"),
    ],
)
def test_request_info(request_line: str, expected: str) -> None:
    """`expected`: verb, group, version, resource, subresource, scope ('-' for none)."""
    method, url = request_line.split(" ")
    path, _, query = url.partition("?")
    params = dict(p.split("=") for p in query.split("&") if p)
    verb, *rest = expected.replace("  ", " - ").split(" ")
    labels = ["" if v == "-" else v for v in rest]
    assert request_info(method, path, params) == RequestInfo(verb, *labels)


def test_client_of_user_agent() -> None:
    assert client_of("kopf/1.45.2") == "kopf"
    assert client_of("OpenAPI-Generator/37.0.2/python") == "OpenAPI-Generator"
    assert client_of("kubectl/v1.33.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert client_of("") == "unknown"


def samples(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def count(found: dict[tuple[tuple[str, str], ...], float], **labels: str) -> float:
    return sum(v for key, v in found.items() if all((k, w) in key for k, w in labels.items()))


async def test_requests_are_counted_by_verb_resource_code_and_client(api: Api) -> None:
    mine = {"User-Agent": "bench-client/1.0"}
    assert (await api.post(CM, configmap("a", x="1"), headers=mine)).status == 201
    assert (await api.post(CM, configmap("a", x="1"), headers=mine)).status == 409
    assert (await api.get(f"{CM}/a", headers=mine)).status == 200
    assert (await api.get(f"{CM}/missing", headers=mine)).status == 404
    assert (await api.get(CM, headers=mine)).status == 200
    assert (await api.patch(f"{CM}/a", {"data": {"x": "2"}}, headers=mine)).status == 200
    events = await api.watch(CM, {"timeoutSeconds": "1"}, headers=mine)
    assert [e["type"] for e in events] == ["ADDED"]  # the initial state, then the timeout
    assert (await api.delete(f"{CM}/a", headers=mine)).status == 200
    assert (await api.delete(CM, headers={"User-Agent": "other/2"})).status == 200

    response = await api.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(await response.text())
    base = {"client": "bench-client", "resource": "configmaps", "version": "v1", "group": ""}
    assert count(found, verb="POST", code="201", scope="namespace", **base) == 1
    assert count(found, verb="POST", code="409", **base) == 1
    assert count(found, verb="GET", code="200", scope="resource", **base) == 1
    assert count(found, verb="GET", code="404", **base) == 1
    assert count(found, verb="LIST", code="200", **base) == 1
    assert count(found, verb="PATCH", code="200", **base) == 1
    assert count(found, verb="WATCH", code="200", **base) == 1
    assert count(found, verb="DELETE", code="200", **base) == 1
    assert count(found, client="bench-client") == 8
    assert count(found, verb="DELETECOLLECTION", client="other", resource="configmaps") == 1

    # /metrics itself counts as a non-resource GET, as in kube-apiserver.
    again = samples(await (await api.client.get("/metrics")).text())
    assert count(again, verb="GET", resource="", scope="") >= 1


async def test_open_watches_are_a_gauge(api: Api) -> None:
    async with api.client.get(CM, params={"watch": "true", "timeoutSeconds": "5"}) as watch:
        assert watch.status == 200
        text = await (await api.client.get("/metrics")).text()
        gauge = [
            s
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "apiserver_longrunning_requests"
        ]
        assert [(s.labels["resource"], s.value) for s in gauge] == [("configmaps", 1.0)]
