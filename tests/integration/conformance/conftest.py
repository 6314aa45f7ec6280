"""Fixtures of the conformance suite (the `cluster` and `namespace` fixtures come from
tests/integration/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.crds import install_crds, project_crds, simple_crd
from tests.integration.conformance.helpers import ApiException
from tests.integration.harness import Cluster
from tests.kubeclient import CoreApi, CustomApi, ExtensionsApi, core_api, custom_api, extensions_api


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with cluster.api_client() as client:
        yield client


@pytest.fixture(scope="session")
def core(api: kubernetes.client.ApiClient) -> CoreApi:
    return core_api(api)


@pytest.fixture(scope="session")
def custom(api: kubernetes.client.ApiClient) -> CustomApi:
    return custom_api(api)


@pytest.fixture(scope="session")
def extensions(api: kubernetes.client.ApiClient) -> ExtensionsApi:
    return extensions_api(api)


@pytest.fixture(scope="session")
def elasticlm_crds(api: kubernetes.client.ApiClient) -> list[str]:
    """This project's CRDs, installed and served; returns their names."""
    return install_crds(api, project_crds())


@pytest.fixture
def scratch_crd(
    extensions: ExtensionsApi,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
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
