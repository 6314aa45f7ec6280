"""Discovery: /version, /api, /apis, resource lists, OpenAPI v2/v3, `kubectl api-resources`."""

from __future__ import annotations

import re
from typing import Any

import kubernetes
import pytest

from tests.integration.conformance.helpers import GROUP, VERSION, get_json, raw
from tests.integration.harness import Cluster, kubectl_binary

ALL_VERBS = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}


def by_name(resource_list: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in resource_list["resources"]}


def test_version(api: kubernetes.client.ApiClient) -> None:
    version = get_json(api, "/version")
    assert version["major"] == "1"
    assert re.fullmatch(r"\d+\+?", version["minor"]), version
    assert re.match(r"v1\.\d+\.\d+", version["gitVersion"]), version
    # the official client parses it too
    info = kubernetes.client.VersionApi(api).get_code()
    assert info.git_version == version["gitVersion"]


def test_core_api_versions(api: kubernetes.client.ApiClient) -> None:
    versions = get_json(api, "/api")
    assert versions["kind"] == "APIVersions"
    assert versions["versions"] == ["v1"]


def test_core_v1_resource_list(api: kubernetes.client.ApiClient) -> None:
    resources = get_json(api, "/api/v1")
    assert resources["kind"] == "APIResourceList"
    assert resources["groupVersion"] == "v1"  # not "/v1"
    found = by_name(resources)
    expected = {
        "pods": ("Pod", True, "po"),
        "services": ("Service", True, "svc"),
        "configmaps": ("ConfigMap", True, "cm"),
        "secrets": ("Secret", True, None),
        "serviceaccounts": ("ServiceAccount", True, "sa"),
        "persistentvolumeclaims": ("PersistentVolumeClaim", True, "pvc"),
        "events": ("Event", True, "ev"),
        "endpoints": ("Endpoints", True, "ep"),
        "namespaces": ("Namespace", False, "ns"),
    }
    for name, (kind, namespaced, short) in expected.items():
        assert name in found, f"{name} missing from /api/v1"
        resource = found[name]
        assert resource["kind"] == kind
        assert resource["namespaced"] is namespaced, name
        assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(
            resource["verbs"]
        ), name
        if short:
            assert short in resource.get("shortNames", []), name
    assert set(found["pods"]["verbs"]) >= ALL_VERBS
    assert set(found["configmaps"]["verbs"]) >= ALL_VERBS
    assert "get" in found["pods/log"]["verbs"]
    assert {"get", "patch", "update"} <= set(found["pods/status"]["verbs"])
    assert found["pods"]["singularName"] in ("pod", "")


def test_api_groups(api: kubernetes.client.ApiClient) -> None:
    groups = get_json(api, "/apis")
    assert groups["kind"] == "APIGroupList"
    found = {g["name"]: g for g in groups["groups"]}
    for name in ("apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io"):
        assert name in found, f"group {name} missing"
        group = found[name]
        assert group["preferredVersion"]["groupVersion"] == f"{name}/v1"
        assert {"groupVersion": f"{name}/v1", "version": "v1"} in group["versions"]


@pytest.mark.parametrize(
    ("group", "resource", "kind", "namespaced", "short"),
    [
        ("coordination.k8s.io", "leases", "Lease", True, None),
        ("events.k8s.io", "events", "Event", True, "ev"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", False,
         "crd"),
    ],
)  # fmt: skip
def test_group_version_resource_lists(
    api: kubernetes.client.ApiClient,
    group: str,
    resource: str,
    kind: str,
    namespaced: bool,
    short: str | None,
) -> None:
    single = get_json(api, f"/apis/{group}")
    assert single["kind"] == "APIGroup"
    assert single["name"] == group
    resources = get_json(api, f"/apis/{group}/v1")
    assert resources["kind"] == "APIResourceList"
    assert resources["groupVersion"] == f"{group}/v1"
    found = by_name(resources)[resource]
    assert found["kind"] == kind
    assert found["namespaced"] is namespaced
    assert set(found["verbs"]) >= ALL_VERBS
    if short:
        assert short in found["shortNames"]


def test_custom_resources_in_discovery(
    api: kubernetes.client.ApiClient, elasticlm_crds: list[str]
) -> None:
    groups = {g["name"]: g for g in get_json(api, "/apis")["groups"]}
    assert groups[GROUP]["preferredVersion"]["groupVersion"] == f"{GROUP}/{VERSION}"
    found = by_name(get_json(api, f"/apis/{GROUP}/{VERSION}"))
    jobs = found["lmtrainingjobs"]
    assert jobs["kind"] == "LMTrainingJob"
    assert jobs["singularName"] == "lmtrainingjob"
    assert jobs["namespaced"] is True
    assert jobs["shortNames"] == ["lmtj"]
    assert jobs["categories"] == ["elasticlm"]
    assert set(jobs["verbs"]) >= ALL_VERBS
    assert found["lmservices"]["shortNames"] == ["lms"]
    assert {"get", "patch", "update"} <= set(found["lmtrainingjobs/status"]["verbs"])
    scale = found["lmtrainingjobs/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert {"get", "patch", "update"} <= set(scale["verbs"])


def test_openapi_v2(api: kubernetes.client.ApiClient, elasticlm_crds: list[str]) -> None:
    document = get_json(api, "/openapi/v2")
    assert document["swagger"] == "2.0"
    definitions = document["definitions"]
    assert "io.k8s.api.core.v1.Pod" in definitions
    job = definitions["io.elasticlm.v1alpha1.LMTrainingJob"]
    assert {"group": GROUP, "version": VERSION, "kind": "LMTrainingJob"} in job[
        "x-kubernetes-group-version-kind"
    ]
    assert "spec" in job["properties"]


def test_openapi_v3(api: kubernetes.client.ApiClient, elasticlm_crds: list[str]) -> None:
    root = get_json(api, "/openapi/v3")
    paths = root["paths"]
    assert "api/v1" in paths
    assert f"apis/{GROUP}/{VERSION}" in paths
    relative = paths[f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]
    assert relative.startswith(f"/openapi/v3/apis/{GROUP}/{VERSION}")
    response = raw(api, "GET", relative)
    assert response.status == 200, response
    document = response.json()
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    job = schemas["io.elasticlm.v1alpha1.LMTrainingJob"]
    assert "elastic" in job["properties"]["spec"]["properties"]
    core = raw(api, "GET", paths["api/v1"]["serverRelativeURL"]).json()
    assert "io.k8s.api.core.v1.Pod" in core["components"]["schemas"]


@pytest.mark.parametrize("minor", [27, 33])
def test_kubectl_api_resources(cluster: Cluster, elasticlm_crds: list[str], minor: int) -> None:
    if kubectl_binary(minor) is None:
        pytest.skip(f"kubectl 1.{minor} is not installed")
    out = cluster.kubectl("api-resources", minor=minor).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    names = {row[0]: row for row in rows}
    assert names["pods"][1] == "po"
    assert names["lmtrainingjobs"][1] == "lmtj"
    assert names["lmservices"][1] == "lms"
    assert "leases" in names
    assert "customresourcedefinitions" in names
    versions = cluster.kubectl("api-versions", minor=minor).stdout.split()
    assert {"v1", f"{GROUP}/{VERSION}", "coordination.k8s.io/v1", "events.k8s.io/v1"} <= set(
        versions
    )
