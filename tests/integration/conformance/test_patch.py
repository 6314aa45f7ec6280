"""PATCH: JSON merge patch, JSON patch (with `test`), strategic merge patch."""

from __future__ import annotations

from typing import Any

from tests.integration.conformance.helpers import (
    GROUP,
    LMTJ,
    PYTHON_IMAGE,
    VERSION,
    api_error,
    training_job,
    wait_default_service_account,
)
from tests.kubeclient import CoreApi, CustomApi

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

SLEEP = ["python", "-c", "import time; time.sleep(600)"]


def test_merge_patch(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "m", "labels": {"keep": "1", "drop": "1"}}, "data": {"a": "1"}},
    )
    patched = core.patch_namespaced_config_map(
        "m",
        namespace,
        {"metadata": {"labels": {"drop": None, "new": "2"}}, "data": {"b": "2"}},
        _content_type=MERGE,
    )
    assert patched.metadata.labels == {"keep": "1", "new": "2"}
    assert patched.data == {"a": "1", "b": "2"}


def test_json_patch_operations(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "j"}, "data": {"a": "1", "b": "2"}}
    )
    patched = core.patch_namespaced_config_map(
        "j",
        namespace,
        [
            {"op": "add", "path": "/data/c", "value": "3"},
            {"op": "replace", "path": "/data/a", "value": "one"},
            {"op": "remove", "path": "/data/b"},
            {"op": "add", "path": "/metadata/labels", "value": {}},
            {"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "x"},
            {"op": "copy", "from": "/data/c", "path": "/data/d"},
        ],
        _content_type=JSON_PATCH,
    )
    assert patched.data == {"a": "one", "c": "3", "d": "3"}
    assert patched.metadata.labels == {"app.kubernetes.io/name": "x"}


def test_json_patch_test_operation_on_resource_version(core: CoreApi, namespace: str) -> None:
    """kopf's first write: a JSON patch that tests /metadata/resourceVersion."""
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "t"}})
    rv = created.metadata.resource_version
    patched = core.patch_namespaced_config_map(
        "t",
        namespace,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/annotations", "value": {"handled": "yes"}},
        ],
        _content_type=JSON_PATCH,
    )
    assert patched.metadata.annotations == {"handled": "yes"}
    # the same patch again: the resourceVersion moved on, the test fails, nothing changes
    status = api_error(
        422,
        core.patch_namespaced_config_map,
        "t",
        namespace,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/annotations", "value": {"handled": "twice"}},
        ],
        _content_type=JSON_PATCH,
    )
    assert status["reason"] == "Invalid"
    assert core.read_namespaced_config_map("t", namespace).metadata.annotations == {
        "handled": "yes"
    }


def test_json_patch_on_custom_resource_with_finalizer(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, LMTJ, training_job("k")
    )
    rv = created["metadata"]["resourceVersion"]
    patched = custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "k",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["kopf.zalando.org/finalizer"]},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
        ],
        _content_type=JSON_PATCH,
    )
    assert patched["metadata"]["finalizers"] == ["kopf.zalando.org/finalizer"]
    assert patched["spec"]["replicas"] == 3
    cleared = custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "k",
        [{"op": "remove", "path": "/metadata/finalizers/0"}],
        _content_type=JSON_PATCH,
    )
    assert not cleared["metadata"].get("finalizers")


def two_container_pod(name: str) -> dict[str, Any]:
    env = [{"name": "KEEP", "value": "1"}, {"name": "ALSO", "value": "2"}]
    return {
        "metadata": {"name": name, "labels": {"app": "smp"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": [
                {"name": "a", "image": PYTHON_IMAGE, "command": SLEEP, "env": env},
                {"name": "b", "image": PYTHON_IMAGE, "command": SLEEP, "env": env},
            ],
        },
    }


def test_strategic_merge_patch_merges_containers_by_name(core: CoreApi, namespace: str) -> None:
    wait_default_service_account(core, namespace)
    core.create_namespaced_pod(namespace, two_container_pod("smp"))
    patched = core.patch_namespaced_pod(
        "smp",
        namespace,
        {
            "metadata": {"labels": {"extra": "yes"}},
            "spec": {"containers": [{"name": "b", "image": "python:3.13-alpine"}]},
        },
        _content_type=STRATEGIC,
    )
    containers = {c.name: c for c in patched.spec.containers}
    assert [c.name for c in patched.spec.containers] == ["a", "b"]
    assert containers["a"].image == PYTHON_IMAGE
    assert containers["b"].image == "python:3.13-alpine"
    assert containers["b"].command == SLEEP  # the rest of container b is kept
    assert patched.metadata.labels == {"app": "smp", "extra": "yes"}


def test_strategic_merge_patch_keeps_env_entries_keyed_by_name(
    core: CoreApi, namespace: str
) -> None:
    """A strategic patch naming one env entry merges into the list (a no-op here, which
    pod validation allows); a JSON merge patch replaces the whole list (forbidden)."""
    wait_default_service_account(core, namespace)
    core.create_namespaced_pod(namespace, two_container_pod("env"))
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "KEEP", "value": "1"}]}]}}
    patched = core.patch_namespaced_pod("env", namespace, patch, _content_type=STRATEGIC)
    env = {c.name: [(e.name, e.value) for e in c.env] for c in patched.spec.containers}
    assert env["a"] == [("KEEP", "1"), ("ALSO", "2")]
    assert env["b"] == [("KEEP", "1"), ("ALSO", "2")]
    status = api_error(422, core.patch_namespaced_pod, "env", namespace, patch, _content_type=MERGE)
    assert status["reason"] == "Invalid"


def test_strategic_merge_patch_on_service_account_secrets(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_service_account(
        namespace, {"metadata": {"name": "sa"}, "secrets": [{"name": "one"}, {"name": "two"}]}
    )
    added = core.patch_namespaced_service_account(
        "sa", namespace, {"secrets": [{"name": "three"}]}, _content_type=STRATEGIC
    )
    assert sorted(s.name for s in added.secrets) == ["one", "three", "two"]
    removed = core.patch_namespaced_service_account(
        "sa",
        namespace,
        {"secrets": [{"name": "one", "$patch": "delete"}]},
        _content_type=STRATEGIC,
    )
    assert sorted(s.name for s in removed.secrets) == ["three", "two"]
    replaced = core.patch_namespaced_service_account(
        "sa", namespace, {"secrets": [{"name": "only"}]}, _content_type=MERGE
    )
    assert [s.name for s in replaced.secrets] == ["only"]


def test_strategic_merge_patch_on_service_ports(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "svc"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        },
    )
    patched = core.patch_namespaced_service(
        "svc",
        namespace,
        {"spec": {"ports": [{"name": "metrics", "port": 9090}]}},
        _content_type=STRATEGIC,
    )
    assert sorted((p.name, p.port) for p in patched.spec.ports) == [
        ("http", 80),
        ("metrics", 9090),
    ]


def test_strategic_merge_patch_is_unsupported_for_custom_resources(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, training_job("s"))
    status = api_error(
        415,
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "s",
        {"spec": {"replicas": 3}},
        _content_type=STRATEGIC,
    )
    assert status["reason"] == "UnsupportedMediaType"
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "s")
    assert got["spec"]["replicas"] == 2
