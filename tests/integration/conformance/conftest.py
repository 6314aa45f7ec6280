"""Fixtures of the conformance suite (the `cluster` and `namespace` fixtures come from
tests/integration/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.crds import install_crds, project_crds, simple_crd
from tests.integration.conformance.helpers import ApiException
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


@pytest.fixture(scope="session")
def elasticlm_crds(api: kubernetes.client.ApiClient) -> list[str]:
    """This project's CRDs, installed and served; returns their names."""
    return install_crds(api, project_crds())


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
    install_crds(extensions.api_client, [crd])
    yield group, "gizmos", crd
    try:
        extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 404:
            raise
