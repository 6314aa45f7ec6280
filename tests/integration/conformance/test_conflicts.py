"""Optimistic concurrency: 409 Conflict on stale writes, one increasing resourceVersion."""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes

from tests.integration.conformance.helpers import (
    GROUP,
    LMTJ,
    VERSION,
    api_error,
    gone,
    training_job,
)
from tests.kubeclient import CoreApi, CustomApi


def rv(obj: Any) -> int:
    return int(obj.metadata.resource_version)


def test_stale_put_is_conflict(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"n": "0"}})
    first = core.read_namespaced_config_map("c", namespace)
    second = core.read_namespaced_config_map("c", namespace)
    first.data = {"n": "1"}
    core.replace_namespaced_config_map("c", namespace, first)
    second.data = {"n": "2"}
    status = api_error(409, core.replace_namespaced_config_map, "c", namespace, second)
    assert status["reason"] == "Conflict"
    assert status["details"]["name"] == "c"
    assert status["details"]["kind"] == "configmaps"
    assert "the object has been modified" in status["message"]
    assert core.read_namespaced_config_map("c", namespace).data == {"n": "1"}


def test_stale_resource_version_in_a_patch_is_conflict(core: CoreApi, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("c", namespace, {"data": {"a": "1"}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"b": "2"}}
    status = api_error(
        409,
        core.patch_namespaced_config_map,
        "c",
        namespace,
        stale,
        _content_type="application/merge-patch+json",
    )
    assert status["reason"] == "Conflict"


def test_put_without_resource_version_is_unconditional_for_configmaps(
    core: CoreApi, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"n": "0"}})
    core.patch_namespaced_config_map("c", namespace, {"data": {"n": "1"}})
    replaced = core.replace_namespaced_config_map(
        "c", namespace, {"metadata": {"name": "c"}, "data": {"n": "forced"}}
    )
    assert replaced.data == {"n": "forced"}


def test_put_without_resource_version_is_invalid_for_custom_resources(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, training_job("j"))
    body = training_job("j")
    status = api_error(
        422, custom.replace_namespaced_custom_object, GROUP, VERSION, namespace, LMTJ, "j", body
    )
    assert status["reason"] == "Invalid"
    assert "metadata.resourceVersion" in [c["field"] for c in status["details"]["causes"]]


def test_resource_version_is_one_increasing_counter_across_kinds(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    leases: Any = kubernetes.client.CoordinationV1Api(api)
    seen = [
        rv(core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})),
        rv(core.create_namespaced_secret(namespace, {"metadata": {"name": "b"}})),
        rv(leases.create_namespaced_lease(namespace, {"metadata": {"name": "c"}, "spec": {}})),
        rv(core.patch_namespaced_config_map("a", namespace, {"data": {"x": "1"}})),
    ]
    other = f"t-rv-{uuid.uuid4().hex[:8]}"
    seen.append(rv(core.create_namespace({"metadata": {"name": other}})))
    try:
        seen.append(rv(core.create_namespaced_config_map(other, {"metadata": {"name": "a"}})))
        seen.append(rv(core.patch_namespaced_secret("b", namespace, {"data": {"y": "eQ=="}})))
    finally:
        core.delete_namespace(other)
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen), seen
    listed = core.list_namespaced_config_map(namespace)
    assert int(listed.metadata.resource_version) >= max(rv(i) for i in listed.items)
    later = rv(core.create_namespaced_config_map(namespace, {"metadata": {"name": "z"}}))
    assert later > seen[-1]


def test_no_op_patch_keeps_resource_version(core: CoreApi, namespace: str) -> None:
    created = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    patched = core.patch_namespaced_config_map(
        "c", namespace, {"data": {"a": "1"}}, _content_type="application/merge-patch+json"
    )
    assert patched.metadata.resource_version == created.metadata.resource_version


def test_delete_preconditions(core: CoreApi, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("c", namespace, {"data": {"a": "1"}})
    status = api_error(
        409,
        core.delete_namespaced_config_map,
        "c",
        namespace,
        body={"preconditions": {"resourceVersion": created.metadata.resource_version}},
    )
    assert status["reason"] == "Conflict"
    status = api_error(
        409,
        core.delete_namespaced_config_map,
        "c",
        namespace,
        body={"preconditions": {"uid": str(uuid.uuid4())}},
    )
    assert status["reason"] == "Conflict"
    current = core.read_namespaced_config_map("c", namespace)
    core.delete_namespaced_config_map(
        "c",
        namespace,
        body={
            "preconditions": {
                "uid": current.metadata.uid,
                "resourceVersion": current.metadata.resource_version,
            }
        },
    )
    assert gone(lambda: core.read_namespaced_config_map("c", namespace))
