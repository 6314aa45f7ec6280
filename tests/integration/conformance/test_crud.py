"""Create, get, list, update and delete of the core kinds, leases, events and namespaces."""

from __future__ import annotations

import base64
import ipaddress
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest

from tests.integration.conformance.helpers import (
    CLUSTER_MADE,
    CONTROLLER_TIMEOUT,
    NOT_YET,
    api_error,
    gone,
    raw,
)
from tests.kubeclient import CoreApi
from tests.waiting import wait_for

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def test_create_returns_201_with_server_fields(core: CoreApi, namespace: str) -> None:
    body = {"metadata": {"name": "settings", "labels": {"a": "b"}}, "data": {"k": "v"}}
    created, code, _ = core.create_namespaced_config_map_with_http_info(namespace, body)
    assert code == 201
    meta = created.metadata
    assert meta.name == "settings"
    assert meta.namespace == namespace  # filled from the URL
    uuid.UUID(meta.uid)
    assert int(meta.resource_version) > 0
    assert isinstance(meta.creation_timestamp, datetime)
    assert abs((datetime.now(UTC) - meta.creation_timestamp).total_seconds()) < 120
    assert created.data == {"k": "v"}


def test_created_object_has_kind_api_version_and_timestamp_format(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    response = raw(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        body={"metadata": {"name": "plain"}, "data": {"x": "1"}},
    )
    assert response.status == 201, response
    created = response.json()
    assert created["kind"] == "ConfigMap"
    assert created["apiVersion"] == "v1"
    assert RFC3339.fullmatch(created["metadata"]["creationTimestamp"])
    got = raw(api, "GET", f"/api/v1/namespaces/{namespace}/configmaps/plain").json()
    assert (got["kind"], got["apiVersion"]) == ("ConfigMap", "v1")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]


def test_generate_name(core: CoreApi, namespace: str) -> None:
    names = set()
    for _ in range(3):
        created = core.create_namespaced_config_map(
            namespace, {"metadata": {"generateName": "gen-"}}
        )
        assert created.metadata.name.startswith("gen-")
        assert len(created.metadata.name) > len("gen-")
        assert created.metadata.generate_name == "gen-"
        names.add(created.metadata.name)
    assert len(names) == 3


def test_configmap_get_list_update_delete(core: CoreApi, namespace: str) -> None:
    for name in ("one", "two"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": {}})
    listed = core.list_namespaced_config_map(namespace)
    names = {item.metadata.name for item in listed.items}
    assert {"one", "two"} <= names
    assert int(listed.metadata.resource_version) > 0

    got = core.read_namespaced_config_map("one", namespace)
    got.data = {"changed": "yes"}
    updated = core.replace_namespaced_config_map("one", namespace, got)
    assert updated.data == {"changed": "yes"}
    assert updated.metadata.uid == got.metadata.uid
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)

    core.delete_namespaced_config_map("one", namespace)
    assert gone(lambda: core.read_namespaced_config_map("one", namespace))
    remaining = {i.metadata.name for i in core.list_namespaced_config_map(namespace).items}
    assert "one" not in remaining
    assert "two" in remaining


def test_list_kinds(api: kubernetes.client.ApiClient, namespace: str, core: CoreApi) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    for path, kind in [
        (f"/api/v1/namespaces/{namespace}/configmaps", "ConfigMapList"),
        (f"/api/v1/namespaces/{namespace}/secrets", "SecretList"),
        (f"/api/v1/namespaces/{namespace}/pods", "PodList"),
        ("/api/v1/namespaces", "NamespaceList"),
        (f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", "LeaseList"),
    ]:
        listed = raw(api, "GET", path).json()
        assert listed["kind"] == kind, path
        assert listed["apiVersion"] in ("v1", "coordination.k8s.io/v1"), path
        assert "resourceVersion" in listed["metadata"], path
        assert isinstance(listed["items"], list), path
    cms = raw(api, "GET", f"/api/v1/namespaces/{namespace}/configmaps").json()
    assert "x" in {i["metadata"]["name"] for i in cms["items"]}


def test_secret_string_data_and_type(core: CoreApi, namespace: str) -> None:
    created = core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    assert created.type == "Opaque"
    assert base64.b64decode(created.data["token"]) == b"s3cret"
    assert not created.string_data
    got = core.read_namespaced_secret("creds", namespace)
    assert base64.b64decode(got.data["token"]) == b"s3cret"
    got.data["other"] = base64.b64encode(b"two").decode()
    replaced = core.replace_namespaced_secret("creds", namespace, got)
    assert set(replaced.data) == {"token", "other"}
    core.delete_namespaced_secret("creds", namespace)
    assert gone(lambda: core.read_namespaced_secret("creds", namespace))


def test_service_gets_cluster_ip_and_endpoints(core: CoreApi, namespace: str) -> None:
    created = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    assert created.spec.type == "ClusterIP"
    ip = ipaddress.ip_address(created.spec.cluster_ip)
    assert created.spec.cluster_ips == [str(ip)]
    port = created.spec.ports[0]
    assert (port.port, port.target_port, port.protocol) == (80, 8080, "TCP")
    listed = core.list_namespaced_service(namespace)
    assert [s.metadata.name for s in listed.items] == ["web"]
    wait_for(
        lambda: core.read_namespaced_endpoints("web", namespace),
        CONTROLLER_TIMEOUT,
        "the Endpoints of the service",
        retry_on=NOT_YET,
    )
    other = core.create_namespaced_service(
        namespace, {"metadata": {"name": "other"}, "spec": {"ports": [{"port": 81}]}}
    )
    assert other.spec.cluster_ip != created.spec.cluster_ip
    status = api_error(
        422,
        core.patch_namespaced_service,
        "web",
        namespace,
        {"spec": {"clusterIP": other.spec.cluster_ip, "clusterIPs": [other.spec.cluster_ip]}},
        _content_type="application/merge-patch+json",
    )  # the cluster IP is immutable
    assert status["reason"] == "Invalid"
    core.delete_namespaced_service("web", namespace)
    assert gone(lambda: core.read_namespaced_service("web", namespace))


def test_serviceaccount_crud(core: CoreApi, namespace: str) -> None:
    created, code, _ = core.create_namespaced_service_account_with_http_info(
        namespace, {"metadata": {"name": "robot"}}
    )
    assert code == 201
    got = core.read_namespaced_service_account("robot", namespace)
    assert got.metadata.uid == created.metadata.uid
    got.metadata.labels = {"role": "ci"}
    updated = core.replace_namespaced_service_account("robot", namespace, got)
    assert updated.metadata.labels == {"role": "ci"}
    names = {s.metadata.name for s in core.list_namespaced_service_account(namespace).items}
    assert "robot" in names
    core.delete_namespaced_service_account("robot", namespace)
    assert gone(lambda: core.read_namespaced_service_account("robot", namespace))


def test_persistentvolumeclaim_crud(core: CoreApi, namespace: str) -> None:
    body = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    created, code, _ = core.create_namespaced_persistent_volume_claim_with_http_info(
        namespace, body
    )
    assert code == 201
    assert created.spec.access_modes == ["ReadWriteOnce"]
    assert created.spec.resources.requests == {"storage": "1Gi"}
    got = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert got.metadata.uid == created.metadata.uid
    patched = core.patch_namespaced_persistent_volume_claim(
        "data", namespace, {"metadata": {"labels": {"tier": "fast"}}}
    )
    assert patched.metadata.labels == {"tier": "fast"}
    listed = core.list_namespaced_persistent_volume_claim(namespace)
    assert [p.metadata.name for p in listed.items] == ["data"]
    core.delete_namespaced_persistent_volume_claim("data", namespace)
    # a bound claim keeps the pvc-protection finalizer while in use; unused it goes
    wait_for(
        lambda: gone(lambda: core.read_namespaced_persistent_volume_claim("data", namespace)),
        CONTROLLER_TIMEOUT,
        "the claim to be deleted",
        retry_on=NOT_YET,
    )


def test_lease_crud(api: kubernetes.client.ApiClient, namespace: str) -> None:
    leases: Any = kubernetes.client.CoordinationV1Api(api)
    body = {
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "pod-a",
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-01-01T00:00:00.000000Z",
            "renewTime": "2025-01-01T00:00:05.000000Z",
            "leaseTransitions": 0,
        },
    }
    created, code, _ = leases.create_namespaced_lease_with_http_info(namespace, body)
    assert code == 201
    assert created.spec.holder_identity == "pod-a"
    got = leases.read_namespaced_lease("leader", namespace)
    got.spec.holder_identity = "pod-b"
    got.spec.lease_transitions = 1
    updated = leases.replace_namespaced_lease("leader", namespace, got)
    assert updated.spec.holder_identity == "pod-b"
    assert updated.spec.lease_transitions == 1
    response = raw(api, "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
    item = response.json()["items"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", item["spec"]["renewTime"])
    leases.delete_namespaced_lease("leader", namespace)
    assert gone(lambda: leases.read_namespaced_lease("leader", namespace))


def test_core_events(core: CoreApi, namespace: str) -> None:
    event = {
        "metadata": {"name": "cm.1"},
        "involvedObject": {"kind": "ConfigMap", "name": "cm", "namespace": namespace},
        "reason": "Testing",
        "message": "a core/v1 event",
        "type": "Normal",
        "source": {"component": "conformance"},
        "firstTimestamp": "2025-01-01T00:00:00Z",
        "lastTimestamp": "2025-01-01T00:00:00Z",
        "count": 1,
    }
    created, code, _ = core.create_namespaced_event_with_http_info(namespace, event)
    assert code == 201
    assert created.reason == "Testing"
    listed = core.list_namespaced_event(namespace, field_selector="involvedObject.name=cm")
    assert [e.message for e in listed.items] == ["a core/v1 event"]
    core.delete_namespaced_event("cm.1", namespace)
    assert gone(lambda: core.read_namespaced_event("cm.1", namespace))


def test_events_k8s_io_events_are_core_events(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    events: Any = kubernetes.client.EventsV1Api(api)
    body = {
        "metadata": {"name": "cm.2"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "elasticlm.io/conformance",
        "reportingInstance": "conformance-1",
        "action": "Checking",
        "reason": "Testing",
        "note": "an events.k8s.io/v1 event",
        "type": "Warning",
        "regarding": {"kind": "ConfigMap", "name": "cm", "namespace": namespace},
    }
    created, code, _ = events.create_namespaced_event_with_http_info(namespace, body)
    assert code == 201
    assert created.note == "an events.k8s.io/v1 event"
    assert created.regarding.name == "cm"
    # one storage, two views: the same event read through core/v1
    legacy = core.read_namespaced_event("cm.2", namespace)
    assert legacy.message == "an events.k8s.io/v1 event"
    assert legacy.involved_object.name == "cm"
    assert legacy.type == "Warning"
    assert legacy.metadata.uid == created.metadata.uid
    listed = events.list_namespaced_event(namespace)
    assert "cm.2" in [e.metadata.name for e in listed.items]
    events.delete_namespaced_event("cm.2", namespace)
    assert gone(lambda: events.read_namespaced_event("cm.2", namespace))


def test_namespace_crud(core: CoreApi) -> None:
    name = f"t-ns-{uuid.uuid4().hex[:8]}"
    created, code, _ = core.create_namespace_with_http_info({"metadata": {"name": name}})
    assert code == 201
    assert created.status.phase == "Active"
    assert core.read_namespace(name).metadata.uid == created.metadata.uid
    assert name in {n.metadata.name for n in core.list_namespace().items}
    listed = core.list_namespace(field_selector=f"metadata.name={name}")
    assert [n.metadata.name for n in listed.items] == [name]
    core.delete_namespace(name)
    wait_for(
        lambda: gone(lambda: core.read_namespace(name)),
        CONTROLLER_TIMEOUT,
        "the namespace to be deleted",
        retry_on=NOT_YET,
    )


def test_already_exists(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    status = api_error(
        409, core.create_namespaced_config_map, namespace, {"metadata": {"name": "dup"}}
    )
    assert status["reason"] == "AlreadyExists"
    assert status["details"]["name"] == "dup"
    assert status["details"]["kind"] == "configmaps"
    assert status["message"] == 'configmaps "dup" already exists'


def test_not_found(core: CoreApi, namespace: str) -> None:
    status = api_error(404, core.read_namespaced_config_map, "missing", namespace)
    assert status["reason"] == "NotFound"
    assert status["details"]["name"] == "missing"
    assert status["details"]["kind"] == "configmaps"
    assert status["message"] == 'configmaps "missing" not found'
    status = api_error(404, core.delete_namespaced_secret, "missing", namespace)
    assert status["reason"] == "NotFound"
    status = api_error(
        404,
        core.replace_namespaced_config_map,
        "missing",
        namespace,
        {"metadata": {"name": "missing"}},
    )
    assert status["reason"] == "NotFound"
    status = api_error(404, core.read_namespace, "no-such-namespace-here")
    assert status["reason"] == "NotFound"
    assert status["details"]["kind"] == "namespaces"


def test_create_in_missing_namespace_is_not_found(core: CoreApi) -> None:
    status = api_error(
        404,
        core.create_namespaced_config_map,
        "no-such-namespace-here",
        {"metadata": {"name": "x"}},
    )
    assert status["reason"] == "NotFound"
    assert "no-such-namespace-here" in status["message"]


def test_namespace_mismatch_is_bad_request(core: CoreApi, namespace: str) -> None:
    body = {"metadata": {"name": "x", "namespace": "somewhere-else"}}
    status = api_error(400, core.create_namespaced_config_map, namespace, body)
    assert status["reason"] == "BadRequest"
    assert "namespace" in status["message"]


def test_update_with_mismatched_name_is_bad_request(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    got = core.read_namespaced_config_map("a", namespace)
    got.metadata.name = "b"
    status = api_error(400, core.replace_namespaced_config_map, "a", namespace, got)
    assert status["reason"] == "BadRequest"


@pytest.mark.parametrize("name", ["UpperCase", "under_score", "-leading-dash"])
def test_invalid_names_are_rejected(core: CoreApi, namespace: str, name: str) -> None:
    status = api_error(
        422, core.create_namespaced_config_map, namespace, {"metadata": {"name": name}}
    )
    assert status["reason"] == "Invalid"
    assert "metadata.name" in [c["field"] for c in status["details"]["causes"]]


def test_list_pagination(api: kubernetes.client.ApiClient, core: CoreApi,
                         namespace: str) -> None:  # fmt: skip
    """The documented contract of limit/continue: pages without gaps or duplicates; a
    server may ignore limit, and then returns everything without a continue token."""
    expected = [f"page-{i}" for i in range(5)]
    for name in expected:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    first = core.list_namespaced_config_map(namespace, limit=2)
    names = [i.metadata.name for i in first.items]
    token = first.metadata.var_continue
    if token:
        assert len(first.items) <= 2
        while token:
            page = core.list_namespaced_config_map(namespace, limit=2, _continue=token)
            assert len(page.items) <= 2
            names += [i.metadata.name for i in page.items]
            token = page.metadata.var_continue
        response = raw(
            api, "GET", f"/api/v1/namespaces/{namespace}/configmaps", query={"continue": "junk"}
        )
        assert response.status in (400, 410), response
    assert len(names) == len(set(names)), names
    assert sorted(n for n in names if n not in CLUSTER_MADE) == expected


def test_dry_run_create_stores_nothing(core: CoreApi, namespace: str) -> None:
    created, code, _ = core.create_namespaced_config_map_with_http_info(
        namespace, {"metadata": {"name": "dry"}, "data": {"a": "b"}}, dry_run="All"
    )
    assert code == 201
    assert created.metadata.name == "dry"
    assert created.data == {"a": "b"}
    assert gone(lambda: core.read_namespaced_config_map("dry", namespace))


def test_headless_service(core: CoreApi, namespace: str) -> None:
    created = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "peers"},
            "spec": {"clusterIP": "None", "selector": {"app": "x"}, "ports": [{"port": 29400}]},
        },
    )
    assert created.spec.cluster_ip == "None"
    assert created.spec.cluster_ips == ["None"]


def test_nodes_are_listed_and_ready(core: CoreApi) -> None:
    nodes = core.list_node().items
    assert nodes
    for node in nodes:
        conditions = {c.type: c.status for c in node.status.conditions}
        assert conditions.get("Ready") in ("True", "False", "Unknown"), node.metadata.name
    assert any(c.type == "Ready" and c.status == "True" for n in nodes for c in n.status.conditions)
    assert core.read_node(nodes[0].metadata.name).metadata.uid == nodes[0].metadata.uid
