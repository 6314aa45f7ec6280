"""Fixtures of the conformance suite (the `cluster` and `namespace` fixtures come from
tests/integration/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.crds import install_crds, project_crds, simple_crd
from tests.integration.conformance.helpers import ApiException
from tests.integration.conformance.workload_helpers import Workloads
from tests.integration.harness import E2E, Cluster, devcluster_process
from tests.kubeclient import (
    AppsApi,
    CoreApi,
    CustomApi,
    ExtensionsApi,
    apps_api,
    core_api,
    custom_api,
    extensions_api,
)


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
def apps(api: kubernetes.client.ApiClient) -> AppsApi:
    return apps_api(api)


@pytest.fixture(scope="session")
def simulated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second devcluster in simulate mode: pods are Running and Ready with no process."""
    if E2E:
        pytest.skip("simulate mode is devcluster's own")
    base = tmp_path_factory.mktemp("simulated")
    with devcluster_process(base / "devcluster", "--simulate") as (_, info):
        yield Cluster(Path(info["kubeconfig"]), info["url"], base / "kubectl-cache", base)


@pytest.fixture(params=["kubelet", "simulate"])
def workloads(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    namespace: str,
    apps: AppsApi,
    core: CoreApi,
) -> Iterator[Workloads]:
    """The test's namespace on the cluster with the process kubelet, then the same test
    on a devcluster in simulate mode (what the controllers do must not depend on it)."""
    if request.param == "kubelet":
        yield Workloads(cluster, namespace, apps, core, simulated=False)
        return
    simulated: Cluster = request.getfixturevalue("simulated_cluster")
    with simulated.api_client() as client:
        sim_core = core_api(client)
        sim_core.create_namespace({"metadata": {"name": namespace}})
        try:
            yield Workloads(simulated, namespace, apps_api(client), sim_core, simulated=True)
        finally:
            sim_core.delete_namespace(namespace)


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
