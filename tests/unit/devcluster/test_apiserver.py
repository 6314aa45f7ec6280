"""The devcluster API server through HTTP, in process (aiohttp's test client)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from devcluster import paths
from devcluster.apiserver.http import parse_accept, parse_api_path
from lmoperator.api.kinds import TRAINING_JOB
from tests.crds import simple_crd
from tests.unit.devcluster.test_apiserver_support import (
    CM,
    CRD_PATH,
    LMS,
    LMTJ,
    PODS,
    SVCS,
    TABLE,
    Api,
    api_client,
    configmap,
    crd,
    example,
    pod,
)

JSON = dict[str, Any]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for client in api_client(tmp_path, bookmark_interval=0.2, history_size=1000):
        yield client


@pytest.fixture
async def crds(api: Api) -> Api:
    await api.install_crds()
    return api


# --------------------------------------------------------------------------- discovery


async def test_version_health_and_discovery(api: Api) -> None:
    version = await api.get("/version")
    assert version["gitVersion"] == "v1.33.0"
    assert (version["major"], version["minor"]) == ("1", "33")
    for path in ("/healthz", "/readyz", "/livez"):
        assert (await api.get(path)).status == 200
    assert (await api.get("/api"))["versions"] == ["v1"]
    core = await api.get("/api/v1")
    assert core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    assert {"namespaces", "pods", "pods/status", "pods/log", "services", "endpoints", "events",
            "configmaps", "secrets", "serviceaccounts", "persistentvolumeclaims",
            "nodes"} <= set(by_name)  # fmt: skip
    assert by_name["pods"]["namespaced"] is True
    assert by_name["pods"]["shortNames"] == ["po"]
    assert "deletecollection" in by_name["pods"]["verbs"]
    assert "watch" in by_name["namespaces"]["verbs"]
    assert by_name["namespaces"]["namespaced"] is False
    assert by_name["pods/log"]["verbs"] == ["get"]
    groups = await api.get("/apis")
    names = [g["name"] for g in groups["groups"]]
    assert {"events.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"} <= set(names)
    assert "" not in names
    group = await api.get("/apis/coordination.k8s.io")
    assert group["kind"] == "APIGroup"
    assert group["preferredVersion"]["groupVersion"] == "coordination.k8s.io/v1"
    missing = await api.get("/apis/nothing.example.com/v1")
    assert missing.status == 404
    assert missing["kind"] == "Status"
    assert missing["reason"] == "NotFound"


async def test_version_is_configurable(tmp_path: Path) -> None:
    async for api in api_client(tmp_path, kubernetes_version="v1.27.0"):
        version = await api.get("/version")
        assert version["gitVersion"] == "v1.27.0"
        assert version["minor"] == "27"


async def test_crd_discovery_and_openapi(crds: Api) -> None:
    api = crds
    resources = await api.get("/apis/elasticlm.io/v1alpha1")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name[TRAINING_JOB.plural]["shortNames"] == ["lmtj"]
    assert by_name[TRAINING_JOB.plural]["categories"] == ["elasticlm"]
    assert by_name[TRAINING_JOB.plural]["kind"] == "LMTrainingJob"
    assert by_name[f"{TRAINING_JOB.plural}/status"]["verbs"] == ["get", "patch", "update"]
    scale = by_name[f"{TRAINING_JOB.plural}/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert "elasticlm.io" in [g["name"] for g in (await api.get("/apis"))["groups"]]

    root = await api.get("/openapi/v3")
    url = root["paths"]["apis/elasticlm.io/v1alpha1"]["serverRelativeURL"]
    assert "api/v1" in root["paths"]
    doc = await api.get(url)
    schema = doc["components"]["schemas"]["io.elasticlm.v1alpha1.LMTrainingJob"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "elasticlm.io", "version": "v1alpha1", "kind": "LMTrainingJob"}
    ]
    assert "replicas" in schema["properties"]["spec"]["properties"]
    item = doc["paths"][TRAINING_JOB.path("{namespace}", "{name}")]
    assert "fieldValidation" in [p["name"] for p in item["patch"]["parameters"]]
    assert item["patch"]["x-kubernetes-group-version-kind"]["kind"] == "LMTrainingJob"
    assert (await api.get("/openapi/v3/apis/nothing/v1")).status == 404

    v2 = await api.get("/openapi/v2", headers={"Accept": "application/json"})
    assert v2["swagger"] == "2.0"
    assert "io.elasticlm.v1alpha1.LMService" in v2["definitions"]
    proto = await api.client.get(
        "/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    assert proto.content_type.endswith("protobuf")
    assert (await proto.read()).startswith(b"\n\x032.0")


def test_route_and_accept_parsing() -> None:
    route = parse_api_path(["api", "v1", "namespaces", "ns", "pods", "p", "log"])
    assert route is not None
    assert (route.namespace, route.plural, route.name, route.subresource) == (
        "ns",
        "pods",
        "p",
        "log",
    )
    route = parse_api_path(["api", "v1", "namespaces", "ns"])
    assert route is not None
    assert (route.namespace, route.plural, route.name) == (None, "namespaces", "ns")
    route = parse_api_path(["api", "v1", "namespaces", "ns", "status"])
    assert route is not None
    assert (route.plural, route.name, route.subresource) == ("namespaces", "ns", "status")
    route = parse_api_path(["apis", "g.io", "v1", "watch", "namespaces", "n", "things", "x"])
    assert route is not None
    assert route.watch
    assert (route.namespace, route.plural, route.name) == ("n", "things", "x")
    assert parse_accept(TABLE).table == "meta.k8s.io/v1"
    assert parse_accept("application/json").table is None
    assert parse_accept("application/yaml").yaml
    with pytest.raises(Exception, match="only the following media types"):
        parse_accept("application/vnd.kubernetes.protobuf")


# --------------------------------------------------------------------------- CRUD


async def test_create_get_list_update_delete(api: Api) -> None:
    created = await api.post(CM, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert created.status == 201
    m = created["metadata"]
    assert (created["apiVersion"], created["kind"]) == ("v1", "ConfigMap")
    assert m["namespace"] == "default"
    assert RFC3339.match(m["creationTimestamp"])
    assert m["generation"] == 1
    assert m["uid"]
    assert m["resourceVersion"].isdigit()
    got = await api.get(f"{CM}/a")
    assert got.body == created.body
    listed = await api.get(CM)
    assert listed["kind"] == "ConfigMapList"
    assert listed["metadata"]["resourceVersion"].isdigit()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    everywhere = await api.get("/api/v1/configmaps")
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["a"]

    again = await api.post(CM, {"metadata": {"name": "a"}})
    assert again.status == 409
    assert again["reason"] == "AlreadyExists"
    assert again["message"] == 'configmaps "a" already exists'
    assert again["details"] == {"name": "a", "group": "", "kind": "configmaps"}

    body = copy.deepcopy(got.body)
    body["data"]["k"] = "w"
    updated = await api.put(f"{CM}/a", body)
    assert updated.status == 200
    assert int(updated["metadata"]["resourceVersion"]) > int(m["resourceVersion"])
    assert updated["metadata"]["generation"] == 2  # no spec: everything but metadata counts
    stale = await api.put(f"{CM}/a", body)
    assert stale.status == 409
    assert stale["reason"] == "Conflict"
    assert stale["message"] == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    unconditional = copy.deepcopy(body)
    del unconditional["metadata"]["resourceVersion"]
    unconditional["data"]["k"] = "x"
    assert (await api.put(f"{CM}/a", unconditional)).status == 200

    deleted = await api.delete(f"{CM}/a")
    assert deleted.status == 200
    assert deleted["kind"] == "Status"
    assert deleted["status"] == "Success"
    assert deleted["details"]["name"] == "a"
    missing = await api.get(f"{CM}/a")
    assert missing.status == 404
    assert missing["message"] == 'configmaps "a" not found'
    assert missing["details"] == {"name": "a", "group": "", "kind": "configmaps"}
    assert (await api.delete(f"{CM}/a")).status == 404


async def test_create_fills_from_url_and_checks_it(api: Api) -> None:
    bare = await api.post(CM, {"metadata": {"generateName": "gen-"}})
    assert bare.status == 201
    assert re.match(r"^gen-[a-z0-9]{5}$", bare["metadata"]["name"])
    wrong_ns = await api.post(CM, {"metadata": {"name": "x", "namespace": "other"}})
    assert wrong_ns.status == 400
    wrong_kind = await api.post(
        CM, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
    )
    assert wrong_kind.status == 400
    no_name = await api.post(CM, {"metadata": {}})
    assert no_name.status == 422
    assert no_name["reason"] == "Invalid"
    assert no_name["details"]["causes"][0]["field"] == "metadata.name"
    bad_name = await api.post(CM, {"metadata": {"name": "Not_Valid"}})
    assert bad_name.status == 422
    assert "RFC 1123 subdomain" in bad_name["message"]
    bad_label = await api.post(CM, {"metadata": {"name": "l", "labels": {"a": "b c"}}})
    assert bad_label.status == 422
    no_ns = await api.post("/api/v1/namespaces/nowhere/configmaps", configmap("x"))
    assert no_ns.status == 404
    assert no_ns["message"] == 'namespaces "nowhere" not found'
    dry = await api.post(CM, configmap("dry"), params={"dryRun": "All"})
    assert dry.status == 201
    assert (await api.get(f"{CM}/dry")).status == 404
    assert (await api.post(CM, configmap("x"), params={"dryRun": "Some"})).status == 400


async def test_namespaces_served_and_lifecycle(api: Api) -> None:
    listed = await api.get("/api/v1/namespaces")
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= {
        n["metadata"]["name"] for n in listed["items"]
    }
    default = await api.get("/api/v1/namespaces/default")
    assert default["status"]["phase"] == "Active"
    assert (await api.get("/api/v1/namespaces/default/serviceaccounts/default")).status == 200
    assert (await api.get("/api/v1/nodes/devcluster"))["status"]["conditions"][0]["type"] == "Ready"

    assert (await api.post("/api/v1/namespaces", {"metadata": {"name": "team"}})).status == 201
    await api.post("/api/v1/namespaces/team/configmaps", configmap("c"))
    await api.post("/api/v1/namespaces/team/pods", pod("p"))
    stuck = configmap("stuck")
    stuck["metadata"]["finalizers"] = ["example.com/hold"]
    await api.post("/api/v1/namespaces/team/configmaps", stuck)
    deleting = await api.delete("/api/v1/namespaces/team")
    assert deleting.status == 200
    assert deleting["status"]["phase"] == "Terminating"
    refused = await api.post("/api/v1/namespaces/team/configmaps", configmap("late"))
    assert refused.status == 403
    assert refused["reason"] == "Forbidden"
    await api.settle()
    assert (await api.get("/api/v1/namespaces/team/configmaps/c")).status == 404
    assert (await api.get("/api/v1/namespaces/team")).status == 200  # held by "stuck" and "p"
    await api.patch("/api/v1/namespaces/team/configmaps/stuck", {"metadata": {"finalizers": None}})
    terminating = await api.get("/api/v1/namespaces/team/pods/p")
    assert terminating["metadata"]["deletionTimestamp"]  # for the kubelet to finish:
    await api.delete("/api/v1/namespaces/team/pods/p", {"gracePeriodSeconds": 0})
    await api.settle()
    assert (await api.get("/api/v1/namespaces/team")).status == 404
    forbidden = await api.delete("/api/v1/namespaces/default")
    assert forbidden.status == 403


# --------------------------------------------------------------------------- generation & status


async def test_generation_and_status_subresource(crds: Api) -> None:
    api = crds
    job = example("LMTrainingJob")
    job["status"] = {"phase": "Running"}
    created = await api.post(LMTJ, job)
    assert created.status == 201, created
    assert "status" not in created.body  # dropped on create: status is a subresource
    assert created["metadata"]["generation"] == 1
    path = f"{LMTJ}/tiny-lm"
    labelled = await api.patch(path, {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    with_status = await api.patch(path, {"status": {"phase": "Running"}, "spec": {"replicas": 3}})
    assert with_status["metadata"]["generation"] == 2
    assert "status" not in with_status.body  # ignored on the main resource
    status = await api.patch(
        f"{path}/status", {"status": {"phase": "Running"}, "spec": {"replicas": 1}}
    )
    assert status.status == 200
    assert status["status"]["phase"] == "Running"
    assert status["spec"]["replicas"] == 3  # ignored on the status subresource
    assert status["metadata"]["generation"] == 2
    got = await api.get(f"{path}/status")
    assert got["status"] == {"phase": "Running"}
    put = copy.deepcopy(got.body)
    put["status"]["phase"] = "Succeeded"
    assert (await api.put(f"{path}/status", put))["status"]["phase"] == "Succeeded"
    # a no-op write changes nothing, not even the resourceVersion
    before = (await api.get(path))["metadata"]["resourceVersion"]
    same = await api.patch(path, {"spec": {"replicas": 3}})
    assert same["metadata"]["resourceVersion"] == before
    # custom resources need a resourceVersion on PUT
    no_rv = copy.deepcopy(same.body)
    del no_rv["metadata"]["resourceVersion"]
    refused = await api.put(path, no_rv)
    assert refused.status == 422
    assert "metadata.resourceVersion" in refused["message"]


async def test_pod_scheduling_status_and_defaults(api: Api) -> None:
    created = await api.post(PODS, pod("p"))
    assert created.status == 201
    assert created["spec"]["nodeName"] == "devcluster"
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["restartPolicy"] == "Always"
    assert created["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    status = {"status": {"phase": "Running", "podIP": "127.10.0.5"}}
    running = await api.patch(f"{PODS}/p/status", status)
    assert running["status"]["phase"] == "Running"
    assert running["status"]["podIP"] == "127.10.0.5"
    immutable = await api.patch(f"{PODS}/p", {"spec": {"restartPolicy": "Never"}})
    assert immutable.status == 422
    assert "pod updates may not change fields" in immutable["message"]
    image = await api.patch(
        f"{PODS}/p",
        {"spec": {"containers": [{"name": "main", "image": "python:3.12"}]}},
        "strategic",
    )
    assert image.status == 200, image
    assert image["spec"]["containers"][0]["image"] == "python:3.12"
    invalid = await api.post(PODS, {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert invalid.status == 422
    assert invalid["message"] == 'Pod "bad" is invalid: spec.containers: Required value'
    no_image = await api.post(
        PODS, {"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}}
    )
    assert no_image["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "spec.containers[0].image",
        }
    ]


# --------------------------------------------------------------------------- patch


async def test_patch_flavours(api: Api) -> None:
    await api.post(CM, configmap("p", a="1", b="2"))
    path = f"{CM}/p"
    merged = await api.patch(path, {"data": {"a": None, "c": "3"}})
    assert merged["data"] == {"b": "2", "c": "3"}
    rv = merged["metadata"]["resourceVersion"]
    # kopf: a JSON patch that tests the resourceVersion first
    ok = await api.patch(
        path,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["kopf.zalando.org/x"]},
        ],
        "json",
    )
    assert ok.status == 200
    assert ok["metadata"]["finalizers"] == ["kopf.zalando.org/x"]
    stale = await api.patch(
        path, [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}], "json"
    )
    assert stale.status == 422
    assert stale["reason"] == "Invalid"
    bad_op = await api.patch(path, [{"op": "remove", "path": "/nothing/here"}], "json")
    assert bad_op.status == 422
    not_a_list = await api.patch(path, {"op": "add"}, "json")
    assert not_a_list.status == 400
    conflict = await api.patch(path, {"metadata": {"resourceVersion": "1"}, "data": {"z": "9"}})
    assert conflict.status == 409
    assert conflict["reason"] == "Conflict"
    garbage = await api.call(
        "PATCH", path, raw=b"{nope", content_type="application/merge-patch+json"
    )
    assert garbage.status == 400
    assert garbage["reason"] == "BadRequest"
    unknown = await api.call("PATCH", path, raw=b"{}", content_type="text/plain")
    assert unknown.status == 415
    assert unknown["reason"] == "UnsupportedMediaType"
    assert (await api.patch(f"{CM}/nope", {"data": {}})).status == 404

    service = {"metadata": {"name": "sp"}, "spec": {"ports": [{"name": "a", "port": 80}]}}
    await api.post(SVCS, service)
    patched = await api.patch(
        f"{SVCS}/sp", {"spec": {"ports": [{"name": "b", "port": 81}]}}, "strategic"
    )
    assert patched.status == 200, patched
    assert [p["port"] for p in patched["spec"]["ports"]] == [81, 80]


async def test_strategic_merge_refused_for_custom_resources(crds: Api) -> None:
    await crds.post(LMTJ, example("LMTrainingJob"))
    reply = await crds.patch(f"{LMTJ}/tiny-lm", {"spec": {"replicas": 1}}, "strategic")
    assert reply.status == 415
    assert reply["reason"] == "UnsupportedMediaType"


async def test_server_side_apply(crds: Api) -> None:
    api = crds
    job = example("LMTrainingJob")
    body = json.dumps(job)
    no_manager = await api.call(
        "PATCH", f"{LMTJ}/tiny-lm", raw=body, content_type="application/apply-patch+yaml"
    )
    assert no_manager.status == 422
    created = await api.call(
        "PATCH",
        f"{LMTJ}/tiny-lm",
        raw=body,
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "me"},
    )
    assert created.status == 201, created
    job["spec"]["replicas"] = 3
    applied = await api.call(
        "PATCH",
        f"{LMTJ}/tiny-lm",
        raw=json.dumps(job),
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "me", "force": "true"},
    )
    assert applied.status == 200
    assert applied["spec"]["replicas"] == 3
    assert applied["metadata"]["generation"] == 2


# --------------------------------------------------------------------------- selectors & lists


async def test_selectors_and_chunking(api: Api) -> None:
    for i in range(5):
        labels = {"app": "web" if i % 2 else "db", "i": str(i)}
        body = configmap(f"c{i}")
        body["metadata"]["labels"] = labels
        await api.post(CM, body)
    web = await api.get(CM, params={"labelSelector": "app=web"})
    assert [i["metadata"]["name"] for i in web["items"]] == ["c1", "c3"]
    setbased = await api.get(CM, params={"labelSelector": "i in (0,4),app!=web"})
    assert [i["metadata"]["name"] for i in setbased["items"]] == ["c0", "c4"]
    named = await api.get(CM, params={"fieldSelector": "metadata.name=c2"})
    assert [i["metadata"]["name"] for i in named["items"]] == ["c2"]
    bad = await api.get(CM, params={"labelSelector": "a in (b"})
    assert bad.status == 400
    assert bad["reason"] == "BadRequest"
    unsupported = await api.get(CM, params={"fieldSelector": "data.x=1"})
    assert unsupported.status == 400
    assert unsupported["message"] == "field label not supported: data.x"

    await api.post(PODS, pod("p1"))
    await api.post(PODS, pod("p2"))
    await api.patch(f"{PODS}/p2/status", {"status": {"phase": "Running"}})
    running = await api.get(PODS, params={"fieldSelector": "status.phase=Running"})
    assert [i["metadata"]["name"] for i in running["items"]] == ["p2"]
    on_node = await api.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=devcluster"})
    assert len(on_node["items"]) == 2

    names: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"limit": "2"}
        if token:
            params["continue"] = token
        page = await api.get(CM, params=params)
        names += [i["metadata"]["name"] for i in page["items"]]
        pages += 1
        token = page["metadata"].get("continue")
        if not token:
            break
        assert page["metadata"]["remainingItemCount"] > 0
    assert names == [f"c{i}" for i in range(5)]
    assert pages == 3
    assert (await api.get(CM, params={"continue": "!!"})).status == 400


async def test_deletecollection(api: Api) -> None:
    for name in ("a", "b", "c"):
        body = configmap(name)
        body["metadata"]["labels"] = {"drop": "yes" if name != "c" else "no"}
        await api.post(CM, body)
    deleted = await api.delete(CM, params={"labelSelector": "drop=yes"})
    assert deleted.status == 200
    assert deleted["kind"] == "ConfigMapList"
    assert sorted(i["metadata"]["name"] for i in deleted["items"]) == ["a", "b"]
    left = await api.get(CM)
    assert [i["metadata"]["name"] for i in left["items"]] == ["c"]


# --------------------------------------------------------------------------- watch


async def test_watch_initial_live_and_resume(api: Api) -> None:
    await api.post(CM, configmap("a"))

    async def changes() -> None:
        await api.patch(f"{CM}/a", {"data": {"x": "1"}})
        await api.post(CM, configmap("b"))
        await api.delete(f"{CM}/a")

    events = await api.watch(CM, {"timeoutSeconds": "5"}, count=4, then=changes)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    assert events[1]["object"]["kind"] == "ConfigMap"
    # resume from the first event's version: a replay of what followed
    since = events[0]["object"]["metadata"]["resourceVersion"]
    replay = await api.watch(CM, {"resourceVersion": since, "timeoutSeconds": "1"}, count=3)
    assert [e["type"] for e in replay] == ["MODIFIED", "ADDED", "DELETED"]
    # legacy watch path with a name
    legacy = await api.watch(
        "/api/v1/watch/namespaces/default/configmaps/b", {"timeoutSeconds": "1"}
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in legacy] == [("ADDED", "b")]


async def test_watch_timeout_bookmarks_and_initial_events(api: Api) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await api.watch(
        CM, {"timeoutSeconds": "1", "allowWatchBookmarks": "true", "resourceVersion": "1"}
    )
    assert 0.9 <= loop.time() - started < 3
    assert events
    assert all(e["type"] == "BOOKMARK" for e in events)
    mark = events[0]["object"]
    assert mark["kind"] == "ConfigMap"
    assert mark["metadata"]["resourceVersion"].isdigit()

    await api.post(CM, configmap("x"))
    initial = await api.watch(
        CM,
        {
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "1",
        },
        count=2,
    )
    assert initial[0]["type"] == "ADDED"
    assert initial[1]["type"] == "BOOKMARK"
    annotations = initial[1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


async def test_watch_too_old_is_410(tmp_path: Path) -> None:
    async for api in api_client(tmp_path, history_size=5):
        for i in range(10):
            await api.post(CM, configmap(f"c{i}"))
        events = await api.watch(CM, {"resourceVersion": "2", "timeoutSeconds": "1"})
        assert len(events) == 1
        assert events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith("too old resource version: 2")


async def test_watch_selectors_follow_changes(api: Api) -> None:
    body = configmap("s")
    body["metadata"]["labels"] = {"team": "a"}
    await api.post(CM, body)

    async def changes() -> None:
        await api.patch(f"{CM}/s", {"metadata": {"labels": {"team": "b"}}})
        await api.patch(f"{CM}/s", {"metadata": {"labels": {"team": "a"}}})

    events = await api.watch(
        CM, {"labelSelector": "team=a", "timeoutSeconds": "3"}, count=3, then=changes
    )
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]


# --------------------------------------------------------------------------- deletion


async def test_finalizers_and_deletion_timestamp(api: Api) -> None:
    body = configmap("f")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    await api.post(CM, body)
    deleted = await api.delete(f"{CM}/f")
    assert deleted.status == 200
    assert deleted["kind"] == "ConfigMap"
    m = deleted["metadata"]
    assert RFC3339.match(m["deletionTimestamp"])
    assert m["deletionGracePeriodSeconds"] == 0
    more = await api.patch(f"{CM}/f", {"metadata": {"finalizers": ["example.com/keep", "x/y"]}})
    assert more.status == 422
    assert "no new finalizers can be added" in more["message"]
    still = await api.delete(f"{CM}/f")
    assert still.status == 200
    assert still["metadata"]["deletionTimestamp"] == m["deletionTimestamp"]
    gone = await api.patch(f"{CM}/f", {"metadata": {"finalizers": []}})
    assert gone.status == 200
    assert (await api.get(f"{CM}/f")).status == 404


async def test_delete_preconditions_and_options(api: Api) -> None:
    created = await api.post(CM, configmap("d"))
    wrong_uid = await api.delete(f"{CM}/d", {"preconditions": {"uid": "nope"}})
    assert wrong_uid.status == 409
    assert "Precondition failed: UID in precondition: nope" in wrong_uid["message"]
    wrong_rv = await api.delete(f"{CM}/d", {"preconditions": {"resourceVersion": "1"}})
    assert wrong_rv.status == 409
    bad_policy = await api.delete(f"{CM}/d", {"propagationPolicy": "Sometimes"})
    assert bad_policy.status == 422
    dry = await api.delete(f"{CM}/d", params={"dryRun": "All"})
    assert dry.status == 200
    assert (await api.get(f"{CM}/d")).status == 200
    ok = await api.delete(f"{CM}/d", {"preconditions": {"uid": created["metadata"]["uid"]}})
    assert ok.status == 200


async def test_pod_graceful_deletion(api: Api) -> None:
    await api.post(PODS, pod("g"))
    await api.patch(f"{PODS}/g/status", {"status": {"phase": "Running"}})
    terminating = await api.delete(f"{PODS}/g")
    assert terminating.status == 200
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    assert (await api.get(f"{PODS}/g")).status == 200
    shorter = await api.delete(f"{PODS}/g", params={"gracePeriodSeconds": "5"})
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    table = await api.get(f"{PODS}/g", headers={"Accept": TABLE})
    assert table["rows"][0]["cells"][2] == "Terminating"
    # the kubelet, once the processes are gone
    gone = await api.delete(f"{PODS}/g", {"gracePeriodSeconds": 0})
    assert gone.status == 200
    assert (await api.get(f"{PODS}/g")).status == 404
    # finished pods and grace 0 go at once
    await api.post(PODS, pod("done"))
    await api.patch(f"{PODS}/done/status", {"status": {"phase": "Succeeded"}})
    await api.delete(f"{PODS}/done")
    assert (await api.get(f"{PODS}/done")).status == 404


async def test_simulate_mode_deletes_pods_at_once(tmp_path: Path) -> None:
    async for api in api_client(tmp_path, simulate=True):
        await api.post(PODS, pod("s"))
        await api.patch(f"{PODS}/s/status", {"status": {"phase": "Running"}})
        await api.delete(f"{PODS}/s")
        assert (await api.get(f"{PODS}/s")).status == 404


def owned(name: str, owner: JSON, block: bool = False) -> JSON:
    body = configmap(name)
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "blockOwnerDeletion": block,
        }
    ]
    return body


async def test_cascade_background(api: Api) -> None:
    owner = (await api.post(CM, configmap("owner"))).body
    await api.post(CM, owned("child-1", owner))
    await api.post(CM, owned("child-2", owner))
    other = (await api.post(CM, configmap("other"))).body
    shared = owned("shared", owner)
    shared["metadata"]["ownerReferences"].append(
        owned("x", other)["metadata"]["ownerReferences"][0]
    )
    await api.post(CM, shared)
    await api.delete(f"{CM}/owner", {"propagationPolicy": "Background"})
    await api.settle()
    names = {i["metadata"]["name"] for i in (await api.get(CM))["items"]}
    assert names == {"other", "shared"}
    refs = (await api.get(f"{CM}/shared"))["metadata"]["ownerReferences"]
    assert [r["name"] for r in refs] == ["other"]


async def test_cascade_foreground(api: Api) -> None:
    owner = (await api.post(CM, configmap("owner"))).body
    blocker = owned("blocker", owner, block=True)
    blocker["metadata"]["finalizers"] = ["example.com/slow"]
    await api.post(CM, blocker)
    await api.post(CM, owned("plain", owner))
    deleting = await api.delete(f"{CM}/owner", {"propagationPolicy": "Foreground"})
    assert "foregroundDeletion" in deleting["metadata"]["finalizers"]
    assert deleting["metadata"]["deletionTimestamp"]
    await api.settle()
    assert (await api.get(f"{CM}/plain")).status == 404
    held = await api.get(f"{CM}/blocker")
    assert held["metadata"]["deletionTimestamp"]
    assert (await api.get(f"{CM}/owner")).status == 200  # blocked by "blocker"
    await api.patch(f"{CM}/blocker", {"metadata": {"finalizers": None}})
    await api.settle()
    assert (await api.get(f"{CM}/blocker")).status == 404
    assert (await api.get(f"{CM}/owner")).status == 404


async def test_cascade_orphan(api: Api) -> None:
    owner = (await api.post(CM, configmap("owner"))).body
    await api.post(CM, owned("child", owner))
    await api.delete(f"{CM}/owner", params={"propagationPolicy": "Orphan"})
    await api.settle()
    assert (await api.get(f"{CM}/owner")).status == 404
    child = await api.get(f"{CM}/child")
    assert child.status == 200
    assert "ownerReferences" not in child["metadata"]


async def test_custom_resources_own_pods(crds: Api) -> None:
    api = crds
    job = (await api.post(LMTJ, example("LMTrainingJob"))).body
    worker = pod("tiny-lm-worker-0")
    worker["metadata"]["ownerReferences"] = owned("x", job, True)["metadata"]["ownerReferences"]
    await api.post(PODS, worker)
    await api.delete(f"{LMTJ}/tiny-lm")
    await api.settle()
    terminating = await api.get(f"{PODS}/tiny-lm-worker-0")
    assert terminating["metadata"]["deletionTimestamp"]  # graceful: the kubelet finishes it


# --------------------------------------------------------------------------- CRDs


async def test_crd_lifecycle(api: Api) -> None:
    definition = crd(TRAINING_JOB.crd_name)
    created = await api.post(CRD_PATH, definition)
    assert created.status == 201
    conditions = {c["type"]: c["status"] for c in created["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert created["status"]["acceptedNames"]["kind"] == "LMTrainingJob"
    assert created["status"]["storedVersions"] == ["v1alpha1"]
    assert (await api.get(LMTJ)).status == 200
    job = await api.post(LMTJ, example("LMTrainingJob"))
    assert job.status == 201
    held = example("LMTrainingJob")
    held["metadata"] = {"name": "held", "finalizers": ["example.com/x"]}
    await api.post(LMTJ, held)
    deleting = await api.delete(f"{CRD_PATH}/{TRAINING_JOB.crd_name}")
    assert deleting.status == 200
    await api.settle()
    assert (await api.get(f"{LMTJ}/tiny-lm")).status == 404
    assert (await api.get(f"{CRD_PATH}/{TRAINING_JOB.crd_name}")).status == 200
    refused = await api.post(LMTJ, example("LMTrainingJob"))
    assert refused.status == 405
    await api.patch(f"{LMTJ}/held", {"metadata": {"finalizers": None}})
    await api.settle()
    assert (await api.get(f"{CRD_PATH}/{TRAINING_JOB.crd_name}")).status == 404
    gone = await api.get(LMTJ)
    assert gone.status == 404
    assert gone["kind"] == "Status"


async def test_crd_with_several_versions(api: Api) -> None:
    schema = {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
        }
    }
    definition = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1beta1", "served": True, "storage": False, "schema": schema},
                {"name": "v1", "served": True, "storage": True, "schema": schema},
                {"name": "v1alpha1", "served": False, "storage": False, "schema": schema},
            ],
        },
    }
    created = await api.post(CRD_PATH, definition)
    assert created.status == 201, created
    assert created["spec"]["names"]["singular"] == "widget"
    assert created["spec"]["names"]["listKind"] == "WidgetList"
    group = await api.get("/apis/example.com")
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    assert group["preferredVersion"]["version"] == "v1"
    assert (await api.get("/apis/example.com/v1alpha1/widgets")).status == 404
    made = await api.post("/apis/example.com/v1beta1/widgets", {"metadata": {"name": "w"}})
    assert made["apiVersion"] == "example.com/v1beta1"
    assert "namespace" not in made["metadata"]
    assert (await api.get("/apis/example.com/v1/widgets/w"))["apiVersion"] == "example.com/v1"
    stored = api.cluster.store.get(("example.com", "widgets"), "", "w")
    assert stored is not None
    assert stored["apiVersion"] == "example.com/v1"
    namespaced = await api.get("/apis/example.com/v1/namespaces/default/widgets")
    assert namespaced.status == 404


async def test_invalid_crds(api: Api) -> None:
    definition = crd("lmservices.elasticlm.io")
    misnamed = copy.deepcopy(definition)
    misnamed["metadata"]["name"] = "wrong.elasticlm.io"
    reply = await api.post(CRD_PATH, misnamed)
    assert reply.status == 422
    assert reply["message"].startswith(
        'CustomResourceDefinition.apiextensions.k8s.io "wrong.elasticlm.io" is invalid:'
    )
    assert "must be spec.names.plural" in reply["message"]
    no_schema = copy.deepcopy(definition)
    del no_schema["spec"]["versions"][0]["schema"]
    assert (await api.post(CRD_PATH, no_schema)).status == 422
    unstructural = copy.deepcopy(definition)
    unstructural["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "properties": {"x": {"type": "string"}}
    }
    refused = await api.post(CRD_PATH, unstructural)
    assert refused.status == 422, refused


async def test_peering_crds_work_like_any(api: Api) -> None:
    for scope, plural, kind in (
        ("Cluster", "clusterkopfpeerings", "ClusterKopfPeering"),
        ("Namespaced", "kopfpeerings", "KopfPeering"),
    ):
        definition = simple_crd("kopf.dev", kind, plural, scope=scope)
        assert (await api.post(CRD_PATH, definition)).status == 201
    peering = "/apis/kopf.dev/v1/clusterkopfpeerings"
    assert (await api.post(peering, {"metadata": {"name": "default"}})).status == 201
    status = {"status": {"operator-1": {"priority": 0, "lifetime": 60}}}
    patched = await api.patch(f"{peering}/default", status)
    assert patched["status"]["operator-1"]["lifetime"] == 60  # no status subresource
    namespaced = "/apis/kopf.dev/v1/namespaces/default/kopfpeerings"
    assert (await api.post(namespaced, {"metadata": {"name": "default"}})).status == 201


async def test_schema_validation_with_project_crds(crds: Api) -> None:
    api = crds
    for kind, path in (("LMTrainingJob", LMTJ), ("LMService", LMS)):
        reply = await api.post(path, example(kind))
        assert reply.status == 201, reply
        assert not reply.warnings
    job = await api.get(f"{LMTJ}/tiny-lm")
    assert job["spec"]["training"]["precision"] == "fp32"

    bad = example("LMTrainingJob")
    bad["metadata"]["name"] = "bad"
    bad["spec"]["replicas"] = -1
    reply = await api.post(LMTJ, bad)
    assert reply.status == 422
    assert reply["reason"] == "Invalid"
    assert reply["message"].startswith('LMTrainingJob.elasticlm.io "bad" is invalid: ')
    assert "spec.replicas" in reply["message"]
    assert any(c["field"] == "spec.replicas" for c in reply["details"]["causes"])
    assert reply["details"]["kind"] == "LMTrainingJob"
    assert reply["details"]["group"] == "elasticlm.io"

    cel = example("LMTrainingJob")
    cel["metadata"]["name"] = "cel"
    cel["spec"]["replicas"] = 9  # above elastic.maxReplicas
    reply = await api.post(LMTJ, cel)
    assert reply.status == 422, reply

    extra = example("LMTrainingJob")
    extra["metadata"]["name"] = "extra"
    extra["spec"]["bogus"] = 1
    warned = await api.post(LMTJ, extra)
    assert warned.status == 201
    assert any("bogus" in w for w in warned.warnings)
    assert "bogus" not in warned["spec"]
    extra["metadata"]["name"] = "strict"
    strict = await api.post(LMTJ, extra, params={"fieldValidation": "Strict"})
    assert strict.status == 400
    assert 'unknown field "spec.bogus"' in strict["message"]


async def test_scale_subresource(crds: Api) -> None:
    api = crds
    await api.post(LMTJ, example("LMTrainingJob"))
    path = f"{LMTJ}/tiny-lm/scale"
    await api.patch(f"{LMTJ}/tiny-lm/status", {"status": {"replicas": 2, "selector": "a=b"}})
    scale = await api.get(path)
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 2, "selector": "a=b"}
    patched = await api.patch(path, {"spec": {"replicas": 3}})
    assert patched.status == 200
    assert patched["spec"]["replicas"] == 3
    job = await api.get(f"{LMTJ}/tiny-lm")
    assert job["spec"]["replicas"] == 3
    assert job["metadata"]["generation"] == 2
    put = copy.deepcopy(patched.body)
    put["spec"]["replicas"] = 1
    assert (await api.put(path, put))["spec"]["replicas"] == 1
    stale = await api.put(path, put)
    assert stale.status == 409
    negative = await api.patch(path, {"spec": {"replicas": -1}})
    assert negative.status == 422
    too_many = await api.patch(path, {"spec": {"replicas": 50000}})
    assert too_many.status == 422


# --------------------------------------------------------------------------- services & friends


async def test_services_endpoints_and_claims(api: Api) -> None:
    service = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    first = await api.post(SVCS, service)
    assert first.status == 201
    ip = first["spec"]["clusterIP"]
    assert ip.startswith("127.96.")
    assert first["spec"]["clusterIPs"] == [ip]
    second = await api.post(SVCS, {"metadata": {"name": "other"}, "spec": {"ports": [{"port": 1}]}})
    assert second["spec"]["clusterIP"] != ip
    headless = await api.post(
        SVCS, {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "selector": {"a": "b"}}}
    )
    assert headless["spec"]["clusterIP"] == "None"
    change = await api.patch(f"{SVCS}/web", {"spec": {"clusterIP": "127.96.9.9"}})
    assert change.status == 422
    taken = await api.post(
        SVCS, {"metadata": {"name": "dup"}, "spec": {"clusterIP": ip, "ports": [{"port": 1}]}}
    )
    assert taken.status == 422
    assert (
        await api.post(SVCS, {"metadata": {"name": "Bad.Name"}, "spec": {"ports": [{"port": 1}]}})
    ).status == 422

    ready = pod("web-1", {"app": "web"})
    ready["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    await api.post(PODS, ready)
    unready = copy.deepcopy(ready)
    unready["metadata"]["name"] = "web-2"
    await api.post(PODS, unready)
    await api.patch(
        f"{PODS}/web-1/status",
        {
            "status": {
                "phase": "Running",
                "podIP": "127.10.0.2",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )
    await api.patch(f"{PODS}/web-2/status", {"status": {"phase": "Running", "podIP": "127.10.0.3"}})
    await api.settle()
    endpoints = await api.get("/api/v1/namespaces/default/endpoints/web")
    assert endpoints.status == 200
    subset = endpoints["subsets"][0]
    assert [a["ip"] for a in subset["addresses"]] == ["127.10.0.2"]
    assert subset["addresses"][0]["targetRef"]["name"] == "web-1"
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["127.10.0.3"]
    assert subset["ports"] == [{"port": 8080, "protocol": "TCP", "name": "http"}]
    slices = await api.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        params={"labelSelector": "kubernetes.io/service-name=web"},
    )
    assert len(slices["items"]) == 1
    piece = slices["items"][0]
    assert piece["addressType"] == "IPv4"
    assert piece["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    conditions = {e["addresses"][0]: e["conditions"]["ready"] for e in piece["endpoints"]}
    assert conditions == {"127.10.0.2": True, "127.10.0.3": False}
    assert piece["metadata"]["ownerReferences"][0]["name"] == "web"
    await api.delete(f"{SVCS}/web")
    await api.settle()
    assert (await api.get("/api/v1/namespaces/default/endpoints/web")).status == 404
    slices = await api.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        params={"labelSelector": "kubernetes.io/service-name=web"},
    )
    assert slices["items"] == []

    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    bound = await api.post("/api/v1/namespaces/default/persistentvolumeclaims", claim)
    assert bound["status"]["phase"] == "Bound"
    assert bound["status"]["capacity"] == {"storage": "1Gi"}
    await api.delete("/api/v1/namespaces/default/persistentvolumeclaims/data")
    await api.settle()
    assert (await api.get("/api/v1/namespaces/default/persistentvolumeclaims/data")).status == 404


async def test_events_in_both_api_groups_and_secrets(api: Api) -> None:
    event = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started",
        "message": "hello",
        "lastTimestamp": "2025-01-01T00:00:05.5+00:00",
        "type": "Normal",
        "count": 1,
    }
    assert (await api.post("/api/v1/namespaces/default/events", event)).status == 201
    new = await api.get("/apis/events.k8s.io/v1/namespaces/default/events/e1")
    assert new["apiVersion"] == "events.k8s.io/v1"
    assert new["deprecatedLastTimestamp"] == "2025-01-01T00:00:05Z"  # a Time
    assert new["note"] == "hello"
    assert new["regarding"]["name"] == "p"
    selected = await api.get(
        "/api/v1/namespaces/default/events",
        params={"fieldSelector": "involvedObject.name=p,involvedObject.kind=Pod"},
    )
    assert len(selected["items"]) == 1
    created = {"metadata": {"name": "e2"}, "regarding": {"kind": "Pod", "name": "q"}, "note": "n"}
    assert (
        await api.post("/apis/events.k8s.io/v1/namespaces/default/events", created)
    ).status == 201
    core = await api.get("/api/v1/namespaces/default/events/e2")
    assert core["message"] == "n"
    assert core["involvedObject"]["name"] == "q"

    secret = {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    stored = await api.post("/api/v1/namespaces/default/secrets", secret)
    assert stored["data"] == {"token": "YWJj"}
    assert stored["type"] == "Opaque"
    assert "stringData" not in stored.body
    bad = await api.post(
        "/api/v1/namespaces/default/secrets", {"metadata": {"name": "b"}, "data": {"k": "%%"}}
    )
    assert bad.status == 400
    stale = {
        "metadata": {"name": "old"},
        "involvedObject": {"kind": "Pod", "name": "p"},
        "lastTimestamp": "2020-01-01T00:00:00Z",
    }
    await api.post("/api/v1/namespaces/default/events", stale)
    assert api.controllers.expire_events() == 0  # an hour after the last write
    assert api.controllers.expire_events(ttl=-5) == 3
    assert (await api.get("/api/v1/namespaces/default/events/old")).status == 404
    lease = {
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "me", "renewTime": "2025-01-01T01:00:05.123456789+01:00"},
    }
    leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    leased = await api.put(f"{leases}/l", lease)
    assert leased.status == 201
    assert leased["spec"]["renewTime"] == "2025-01-01T00:00:05.123456Z"  # a MicroTime
    lease["spec"]["renewTime"] = "yesterday"
    assert (await api.put(f"{leases}/l", lease)).status == 400


async def test_pod_disruption_budgets_are_stored_with_status(api: Api) -> None:
    pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    created = await api.post(pdbs, pdb)
    assert created.status == 201
    assert created["spec"]["maxUnavailable"] == 1
    patched = await api.patch(f"{pdbs}/web/status", {"status": {"disruptionsAllowed": 1}})
    assert patched["status"]["disruptionsAllowed"] == 1
    assert [i["metadata"]["name"] for i in (await api.get(pdbs))["items"]] == ["web"]


async def test_network_policies_are_stored_and_discovered(api: Api) -> None:
    group = await api.get("/apis/networking.k8s.io/v1")
    (resource,) = [r for r in group["resources"] if r["name"] == "networkpolicies"]
    assert resource["kind"] == "NetworkPolicy"
    assert resource["namespaced"] is True
    assert resource["shortNames"] == ["netpol"]
    assert {"create", "get", "list", "watch", "patch", "delete"} <= set(resource["verbs"])
    policies = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "job-pods"},
        "spec": {
            "podSelector": {"matchLabels": {"elasticlm.io/job": "job"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"elasticlm.io/job": "job"}}}]}],
        },
    }
    created = await api.post(policies, policy)
    assert created.status == 201
    assert created["spec"] == policy["spec"]
    patched = await api.patch(f"{policies}/job-pods", {"spec": {"ingress": []}})
    assert patched["spec"]["ingress"] == []
    assert [i["metadata"]["name"] for i in (await api.get(policies))["items"]] == ["job-pods"]


# --------------------------------------------------------------------------- tables


async def test_tables(crds: Api) -> None:
    api = crds
    await api.post(LMTJ, example("LMTrainingJob"))
    await api.patch(f"{LMTJ}/tiny-lm/status", {"status": {"phase": "Running", "loss": 2.5}})
    table = await api.get(LMTJ, headers={"Accept": TABLE})
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == [
        "Name",
        "Phase",
        "Replicas",
        "Ready",
        "World",
        "Step",
        "Loss",
        "Tokens/s",
        "Age",
    ]
    priorities = {c["name"]: c["priority"] for c in table["columnDefinitions"]}
    assert priorities["Loss"] == 1
    assert priorities["Phase"] == 0
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["tiny-lm", "Running", 2, None]
    assert cells[6] == 2.5
    assert re.match(r"^\d+s$", cells[8])
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    full = await api.get(LMTJ, headers={"Accept": TABLE}, params={"includeObject": "Object"})
    assert full["rows"][0]["object"]["kind"] == "LMTrainingJob"

    await api.post(PODS, pod("p"))
    pods = await api.get(PODS, headers={"Accept": TABLE})
    assert [c["name"] for c in pods["columnDefinitions"] if c["priority"] == 0] == [
        "Name", "Ready", "Status", "Restarts", "Age",
    ]  # fmt: skip
    assert pods["rows"][0]["cells"][:4] == ["p", "0/1", "Pending", "0"]
    await api.patch(
        f"{PODS}/p/status",
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "main", "ready": False, "restartCount": 2,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ],
            }
        },
    )  # fmt: skip
    pods = await api.get(PODS, headers={"Accept": TABLE})
    assert pods["rows"][0]["cells"][1:4] == ["0/1", "CrashLoopBackOff", "2"]
    await api.post(SVCS, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    services = await api.get(SVCS, headers={"Accept": TABLE})
    assert [c["name"] for c in services["columnDefinitions"]][:6] == [
        "Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age",
    ]  # fmt: skip
    assert services["rows"][0]["cells"][4] == "80/TCP"
    await api.post(CM, configmap("c", a="1", b="2"))
    cms = await api.get(CM, headers={"Accept": TABLE})
    assert cms["rows"][0]["cells"][:2] == ["c", 2]
    namespaces = await api.get("/api/v1/namespaces", headers={"Accept": TABLE})
    assert namespaces["rows"][0]["cells"][1] == "Active"
    one = await api.get(f"{CM}/c", headers={"Accept": TABLE})
    assert len(one["rows"]) == 1

    async def change() -> None:
        await api.patch(f"{CM}/c", {"data": {"z": "3"}})

    events = await api.watch(
        CM, {"timeoutSeconds": "2"}, count=2, headers={"Accept": TABLE}, then=change
    )
    assert events[0]["object"]["kind"] == "Table"
    assert events[0]["object"]["columnDefinitions"]
    assert events[1]["type"] == "MODIFIED"
    assert events[1]["object"]["rows"][0]["cells"][1] == 3


# --------------------------------------------------------------------------- errors


async def test_error_statuses(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = await api.get("/api/v1/namespaces/default/widgets")
    assert unknown.status == 404
    assert unknown["kind"] == "Status"
    assert unknown["reason"] == "NotFound"
    assert (await api.get("/nothing/here")).status == 404
    malformed = await api.call("POST", CM, raw=b'{"metadata": ')
    assert malformed.status == 400
    assert malformed["reason"] == "BadRequest"
    yaml_body = await api.call(
        "POST", CM, raw=b"metadata: {name: y}\ndata: {a: b}\n", content_type="application/yaml"
    )
    assert yaml_body.status == 201
    bad_yaml = await api.call("POST", CM, raw=b"metadata: [\n", content_type="application/yaml")
    assert bad_yaml.status == 400
    not_object = await api.post(CM, [1, 2])
    assert not_object.status == 400
    big = configmap("big", blob="x" * (3 * 1024 * 1024 + 10))
    too_large = await api.post(CM, big)
    assert too_large.status == 413
    assert too_large["reason"] == "RequestEntityTooLarge"
    wrong_method = await api.call("POST", f"{CM}/x")
    assert wrong_method.status == 405
    assert wrong_method["reason"] == "MethodNotAllowed"
    not_acceptable = await api.get(CM, headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert not_acceptable.status == 406
    assert not_acceptable["reason"] == "NotAcceptable"
    protobuf = await api.call(
        "POST", CM, raw=b"\x00", content_type="application/vnd.kubernetes.protobuf"
    )
    assert protobuf.status == 400
    bad_type = await api.post(CM, {"metadata": {"name": "t", "labels": {"a": 1}}})
    assert bad_type.status == 400

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.cluster, "get", explode)
    failure = await api.get(f"{CM}/y")
    assert failure.status == 500
    assert failure["reason"] == "InternalError"
    monkeypatch.undo()
    assert (await api.get(f"{CM}/y")).status == 200  # the server lives on


def _pb_field(number: int, payload: bytes) -> bytes:
    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


async def test_protobuf_bodies(api: Api) -> None:
    meta = (
        _pb_field(1, b"pb")
        + _pb_field(2, b"")
        + _pb_field(11, _pb_field(1, b"k") + _pb_field(2, b"v"))
    )
    raw = _pb_field(1, meta) + _pb_field(2, _pb_field(1, b"a") + _pb_field(2, b"1"))
    type_meta = _pb_field(1, b"v1") + _pb_field(2, b"ConfigMap")
    body = b"k8s\x00" + _pb_field(1, type_meta) + _pb_field(2, raw)
    created = await api.call(
        "POST", CM, raw=body, content_type="application/vnd.kubernetes.protobuf"
    )
    assert created.status == 201, created
    assert created["data"] == {"a": "1"}
    assert created["metadata"]["labels"] == {"k": "v"}
    assert "generateName" not in created["metadata"]
    pod_type = _pb_field(1, b"v1") + _pb_field(2, b"Pod")
    refused = await api.call(
        "POST",
        PODS,
        raw=b"k8s\x00" + _pb_field(1, pod_type),
        content_type="application/vnd.kubernetes.protobuf",
    )
    assert refused.status == 415
    garbage = await api.call(
        "POST", CM, raw=b"nonsense", content_type="application/vnd.kubernetes.protobuf"
    )
    assert garbage.status == 400


async def test_protobuf_delete_options(api: Api) -> None:
    """client-go's typed clients send DeleteOptions as protobuf (Helm's release storage
    deletes its Secrets so): preconditions, dryRun and propagationPolicy count."""
    uid = (await api.post(CM, {"metadata": {"name": "d"}}))["metadata"]["uid"]

    def options(*fields: bytes) -> bytes:
        type_meta = _pb_field(1, b"v1") + _pb_field(2, b"DeleteOptions")
        return b"k8s\x00" + _pb_field(1, type_meta) + _pb_field(2, b"".join(fields))

    async def delete(body: bytes) -> Any:
        return await api.call(
            "DELETE", f"{CM}/d", raw=body, content_type="application/vnd.kubernetes.protobuf"
        )

    stale = await delete(options(_pb_field(2, _pb_field(1, b"not-the-uid"))))
    assert stale.status == 409, stale
    assert stale["reason"] == "Conflict"
    dry = await delete(options(_pb_field(5, b"All")))
    assert dry.status == 200, dry
    assert (await api.get(f"{CM}/d")).status == 200
    gone = await delete(
        options(_pb_field(2, _pb_field(1, uid.encode())), _pb_field(4, b"Background"))
    )
    assert gone.status == 200, gone
    assert (await api.get(f"{CM}/d")).status == 404


# --------------------------------------------------------------------------- logs


async def test_pod_logs(api: Api, tmp_path: Path) -> None:
    created = (await api.post(PODS, pod("l"))).body
    uid = created["metadata"]["uid"]
    missing = await api.get(f"{PODS}/l/log")
    assert missing.status == 400
    assert "waiting to start" in missing["message"]
    log_file = paths.container_log_file(tmp_path, "default", "l", uid, "main")
    log_file.parent.mkdir(parents=True)
    log_file.write_text("one\ntwo\nthree\n")
    async with api.client.get(f"{PODS}/l/log") as response:
        assert response.status == 200
        assert await response.text() == "one\ntwo\nthree\n"
    async with api.client.get(f"{PODS}/l/log", params={"tailLines": "1"}) as response:
        assert await response.text() == "three\n"
    async with api.client.get(
        f"{PODS}/l/log", params={"timestamps": "true", "tailLines": "1"}
    ) as response:
        assert re.match(r"^\d{4}-\d\d-\d\dT\S+Z three\n$", await response.text())
    previous = await api.get(f"{PODS}/l/log", params={"previous": "true"})
    assert previous.status == 400
    wrong = await api.get(f"{PODS}/l/log", params={"container": "nope"})
    assert wrong.status == 400
    assert wrong["message"] == "container nope is not valid for pod l"
    two = pod("two")
    two["spec"]["containers"].append({"name": "side", "image": "x:1"})
    await api.post(PODS, two)
    choose = await api.get(f"{PODS}/two/log")
    assert choose.status == 400
    assert (
        choose["message"]
        == "a container name must be specified for pod two, choose one of: [main side]"
    )

    # follow: new lines stream until the container terminates
    async def read_until(response: ClientResponse, text: bytes) -> bytes:
        read = b""
        while not read.endswith(text):
            chunk = await asyncio.wait_for(response.content.readline(), 5)
            assert chunk, f"the stream ended before {text!r}; read {read!r}"
            read += chunk
        return read

    async with api.client.get(f"{PODS}/l/log", params={"follow": "true"}) as response:
        streamed = await read_until(response, b"three\n")
        with log_file.open("a") as handle:
            handle.write("four\n")
        streamed += await read_until(response, b"four\n")
        terminated = {"name": "main", "ready": False, "restartCount": 0,
                      "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}  # fmt: skip
        await api.patch(
            f"{PODS}/l/status",
            {"status": {"phase": "Succeeded", "containerStatuses": [terminated]}},
        )
        streamed += await asyncio.wait_for(response.content.read(), 5)
    assert streamed == b"one\ntwo\nthree\nfour\n"


# --------------------------------------------------------------------------- persistence


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    async for api in api_client(tmp_path, persist=True):
        await api.install_crds()
        await api.post(LMTJ, example("LMTrainingJob"))
        await api.post(CM, configmap("kept", a="1"))
        rv = (await api.get(CM))["metadata"]["resourceVersion"]
    assert paths.snapshot_file(tmp_path).exists()
    async for api in api_client(tmp_path, persist=True):
        kept = await api.get(f"{CM}/kept")
        assert kept["data"] == {"a": "1"}
        job = await api.get(f"{LMTJ}/tiny-lm")
        assert job.status == 200
        assert int((await api.get(CM))["metadata"]["resourceVersion"]) >= int(rv)
        created = await api.post(CM, configmap("new"))
        assert int(created["metadata"]["resourceVersion"]) > int(rv)
        too_old = await api.watch(CM, {"resourceVersion": "3", "timeoutSeconds": "1"})
        assert too_old[0]["type"] == "ERROR"
        assert too_old[0]["object"]["code"] == 410
