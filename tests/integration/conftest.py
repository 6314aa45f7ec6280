"""Fixtures shared by the integration tests: one devcluster per test session, and one in
simulate mode (pods run no processes) for the tests of the operator's API traffic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from tests.crds import install_crds, project_crds
from tests.integration.harness import Cluster, devcluster_process, running_cluster
from tests.kubeclient import core_api


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="session")
def sim_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("simcluster")
    with devcluster_process(base / "devcluster", "--simulate") as (_, info):
        cluster = Cluster(Path(info["kubeconfig"]), info["url"], base / "cache", base)
        with cluster.api_client() as api:
            install_crds(api, project_crds())
        yield cluster


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (as dask-kubernetes' tests do)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with cluster.api_client() as api:
        core = core_api(api)
        core.create_namespace({"metadata": {"name": name}})
        yield name
        try:
            core.delete_namespace(name)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
