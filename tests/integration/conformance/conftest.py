"""Fixtures of the conformance suite (the `cluster` and `namespace` fixtures come from
tests/integration/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.crd_builder import simple_crd
from tests.integration.conformance.helpers import (
    CRDS_DIR,
    GROUP,
    VERSION,
    ApiException,
    get_json,
    load_yaml,
    wait_for,
)
from tests.integration.harness import Cluster


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with cluster.api_client() as client:
        yield client


@pytest.fixture(scope="session")
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture(scope="session")
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture(scope="session")
def extensions(api: kubernetes.client.ApiClient) -> kubernetes.client.ApiextensionsV1Api:
    return kubernetes.client.ApiextensionsV1Api(api)


def apply_crd(ext: kubernetes.client.ApiextensionsV1Api, crd: dict) -> None:
    """Create the CRD, or replace it when it exists (reruns against a real cluster)."""
    name = crd["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        crd = {**crd, "metadata": {**crd["metadata"]}}
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, crd)

    def established() -> bool:
        got = ext.read_custom_resource_definition(name)
        return any(
            c.type == "Established" and c.status == "True" for c in got.status.conditions or []
        )

    wait_for(established, 30, f"CRD {name} to be Established")


@pytest.fixture(scope="session")
def elasticlm_crds(
    api: kubernetes.client.ApiClient, extensions: kubernetes.client.ApiextensionsV1Api
) -> list[str]:
    """This project's CRDs (crds/*.yaml), applied and served; returns their names."""
    names = []
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        for crd in load_yaml(path):
            apply_crd(extensions, crd)
            names.append(crd["metadata"]["name"])

    def served() -> bool:
        resources = get_json(api, f"/apis/{GROUP}/{VERSION}")["resources"]
        served = {r["name"] for r in resources}
        return {"lmtrainingjobs", "lmservices"} <= served

    wait_for(served, 30, "the elasticlm.io resources in discovery")
    return names


@pytest.fixture
def scratch_crd(
    extensions: kubernetes.client.ApiextensionsV1Api,
) -> Iterator[tuple[str, str, dict]]:
    """A throwaway namespaced CRD in its own group: (group, plural, crd)."""
    group = f"g{uuid.uuid4().hex[:8]}.conformance.elasticlm.io"
    crd = simple_crd(
        group,
        "Gizmo",
        "gizmos",
        spec_properties={"size": {"type": "integer"}},
        free_form_status=False,
    )
    apply_crd(extensions, crd)
    yield group, "gizmos", crd
    try:
        extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 404:
            raise
