"""Fixtures shared by the integration tests: one devcluster per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.integration.harness import Cluster, running_cluster
from tests.kubeclient import core_api


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


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
