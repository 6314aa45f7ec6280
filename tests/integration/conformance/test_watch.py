"""Watch: event types, resuming from a resourceVersion, bookmarks, timeouts, 410 Gone."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import kubernetes

from tests.integration.conformance.helpers import (
    CLUSTER_MADE,
    WatchStream,
    named,
    raw,
)
from tests.integration.harness import E2E, Cluster
from tests.kubeclient import CoreApi


def configmaps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def list_rv(core: CoreApi, namespace: str) -> str:
    return str(core.list_namespaced_config_map(namespace).metadata.resource_version)


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


def test_added_modified_deleted(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    with WatchStream(api, configmaps(namespace), resourceVersion=list_rv(core, namespace)) as w:
        assert w.status == 200
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "w"}})
        core.patch_namespaced_config_map("w", namespace, {"data": {"k": "v"}})
        core.delete_namespaced_config_map("w", namespace)
        events = w.until(lambda e: e["type"] == "DELETED")
    assert summary(events) == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert events[1]["object"]["data"] == {"k": "v"}
    assert events[0]["object"]["kind"] == "ConfigMap"
    assert events[0]["object"]["apiVersion"] == "v1"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs), rvs
    assert len(set(rvs)) == 3, rvs


def test_resume_from_resource_version(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    first = core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", namespace, {"data": {"n": "1"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "b"}})
    core.delete_namespaced_config_map("a", namespace)
    with WatchStream(
        api, configmaps(namespace), resourceVersion=first.metadata.resource_version
    ) as w:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "marker"}})
        events = w.until(named("marker"))
    assert summary(events) == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("ADDED", "marker"),
    ]


def test_watch_without_resource_version_starts_with_current_state(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    for name in ("x", "y"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    with WatchStream(api, configmaps(namespace)) as w:
        initial = [w.next(), w.next()]
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "z"}})
        later = w.until(named("z"))
    assert sorted(summary(initial)) == [("ADDED", "x"), ("ADDED", "y")]
    assert summary(later) == [("ADDED", "z")]


def test_bookmarks_with_initial_events(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "present"}})
    before = int(list_rv(core, namespace))
    with WatchStream(
        api,
        configmaps(namespace),
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
    ) as w:
        assert w.status == 200
        events = w.until(lambda e: e["type"] == "BOOKMARK")
    assert summary(events[:-1]) == [("ADDED", "present")]
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "ConfigMap"
    assert bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
    assert int(bookmark["metadata"]["resourceVersion"]) >= before


def test_allow_watch_bookmarks_keeps_events_flowing(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    with WatchStream(
        api,
        configmaps(namespace),
        resourceVersion=list_rv(core, namespace),
        allowWatchBookmarks="true",
    ) as w:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "b1"}})
        events = w.until(named("b1"))
    for event in events:
        if event["type"] == "BOOKMARK":  # a bookmark carries only a resourceVersion
            assert set(event["object"]["metadata"]) <= {"resourceVersion", "annotations"}
    assert summary([e for e in events if e["type"] != "BOOKMARK"]) == [("ADDED", "b1")]


def test_timeout_seconds_ends_the_stream(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    started = time.monotonic()
    with WatchStream(
        api, configmaps(namespace), resourceVersion=list_rv(core, namespace), timeoutSeconds=1
    ) as w:
        assert w.ended.wait(15), "the watch did not end after timeoutSeconds=1"
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 10, elapsed
    assert w.error is None, w.error


def test_label_selector_watch_sees_objects_enter_and_leave(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    with WatchStream(
        api, configmaps(namespace), resourceVersion=list_rv(core, namespace), labelSelector="app=x"
    ) as w:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "other"}})
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "l", "labels": {"app": "y"}}}
        )
        core.patch_namespaced_config_map("l", namespace, {"metadata": {"labels": {"app": "x"}}})
        core.patch_namespaced_config_map("l", namespace, {"data": {"a": "1"}})
        core.patch_namespaced_config_map("l", namespace, {"metadata": {"labels": {"app": "z"}}})
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "end", "labels": {"app": "x"}}}
        )
        events = w.until(named("end"))
    assert summary(events) == [
        ("ADDED", "l"),  # started to match
        ("MODIFIED", "l"),
        ("DELETED", "l"),  # stopped matching
        ("ADDED", "end"),
    ]


def test_field_selector_watch_on_one_object(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "one"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "two"}})
    with WatchStream(
        api,
        configmaps(namespace),
        fieldSelector="metadata.name=one",
        resourceVersion="0",
    ) as w:
        first = w.next()
        core.patch_namespaced_config_map("two", namespace, {"data": {"x": "1"}})
        core.patch_namespaced_config_map("one", namespace, {"data": {"x": "1"}})
        second = w.next()
    assert summary([first, second]) == [("ADDED", "one"), ("MODIFIED", "one")]


def test_watch_across_namespaces(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    label = uuid.uuid4().hex[:10]
    other = f"t-w-{label}"
    rv = core.list_config_map_for_all_namespaces(limit=1).metadata.resource_version
    with WatchStream(
        api, "/api/v1/configmaps", resourceVersion=rv, labelSelector=f"w={label}"
    ) as w:
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "here", "labels": {"w": label}}}
        )
        core.create_namespace({"metadata": {"name": other}})
        try:
            core.create_namespaced_config_map(
                other, {"metadata": {"name": "there", "labels": {"w": label}}}
            )
            events = w.until(named("there"))
        finally:
            core.delete_namespace(other)
    assert [(e["type"], e["object"]["metadata"]["namespace"]) for e in events] == [
        ("ADDED", namespace),
        ("ADDED", other),
    ]


def test_python_client_watch(core: CoreApi, namespace: str) -> None:
    rv = list_rv(core, namespace)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "typed"}})
    watch: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    seen = []
    for event in watch.stream(
        core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=10
    ):
        if event["object"].metadata.name in CLUSTER_MADE:
            continue
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "typed":
            watch.stop()
    assert seen == [("ADDED", "typed")]


async def _flood(url: str, path: str, writes: int) -> None:
    """Many writes quickly, to push old resourceVersions out of the server's history."""
    async with aiohttp.ClientSession() as session:
        semaphore = asyncio.Semaphore(48)

        async def write(i: int) -> None:
            async with (
                semaphore,
                session.patch(
                    url + path,
                    data=json.dumps({"data": {"i": str(i)}}),
                    headers={"Content-Type": "application/merge-patch+json"},
                ) as response,
            ):
                await response.read()
                assert response.status == 200, response.status

        await asyncio.gather(*(write(i) for i in range(writes)))


def _watch_from_one(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, Any] | None:
    """Watch from resourceVersion 1: the expiry Status if the server refuses it."""
    with WatchStream(
        api, configmaps(namespace), resourceVersion="1", timeoutSeconds=1, timeout=30
    ) as w:
        if w.status == 410:  # refused before streaming: the body is the Status
            w.ended.wait(10)
            body = w.drain()
            return body[0] if body else {"kind": "Status", "code": 410, "reason": "Gone"}
        w.ended.wait(20)
        for event in w.drain():
            if event["type"] == "ERROR":
                status: dict[str, Any] = event["object"]
                return status
    return None


def test_too_old_resource_version_is_gone(
    cluster: Cluster, api: kubernetes.client.ApiClient, core: CoreApi,
    namespace: str,
) -> None:  # fmt: skip
    """A real API server has compacted resourceVersion 1 long ago. devcluster keeps a
    bounded history of events: write until version 1 falls out of it (generous)."""
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "flood"}})
    expired = _watch_from_one(api, namespace)
    for _ in range(6):
        if expired is not None or E2E:
            break
        asyncio.run(_flood(cluster.url, f"{configmaps(namespace)}/flood", 5000))
        expired = _watch_from_one(api, namespace)
    assert expired is not None, "watching from resourceVersion 1 never answered 410 Gone"
    assert expired["kind"] == "Status"
    assert expired["code"] == 410
    assert expired["reason"] in ("Expired", "Gone")
    # a list still works, and a watch from its resourceVersion
    rv = list_rv(core, namespace)
    response = raw(api, "GET", configmaps(namespace), query={"resourceVersion": rv, "limit": 1})
    assert response.status == 200


def test_watch_namespaces(api: kubernetes.client.ApiClient, core: CoreApi) -> None:
    """kopf starts no watchers unless v1/namespaces can be listed and watched."""
    name = f"t-wn-{uuid.uuid4().hex[:8]}"
    rv = core.list_namespace().metadata.resource_version
    with WatchStream(
        api, "/api/v1/namespaces", resourceVersion=rv, fieldSelector=f"metadata.name={name}"
    ) as w:
        core.create_namespace({"metadata": {"name": name, "labels": {"w": "1"}}})
        added = w.next()
        core.delete_namespace(name)
        modified = w.until(lambda e: e["type"] in ("MODIFIED", "DELETED"))[-1]
    assert added["type"] == "ADDED"
    assert added["object"]["kind"] == "Namespace"
    assert added["object"]["status"]["phase"] == "Active"
    assert modified["object"]["metadata"]["name"] == name
