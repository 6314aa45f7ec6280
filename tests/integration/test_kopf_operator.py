"""A real kopf operator, with peering (not --standalone), handles a custom resource."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from lmoperator.localstack import stop_process
from tests.crds import install_crds, kopf_peering_crds, simple_crd
from tests.integration.harness import Cluster
from tests.kubeclient import core_api, custom_api
from tests.waiting import wait_for

OPERATOR = Path(__file__).parent / "kopf_app" / "widget_operator.py"

WIDGET_CRD = simple_crd(
    "test.elasticlm.io",
    "Widget",
    "widgets",
    spec_properties={"name": {"type": "string"}, "size": {"type": "integer"}},
    status_subresource=True,
)


def ensure(create: Callable[[], Any]) -> None:
    try:
        create()
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


@pytest.fixture
def kopf_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[None]:
    with cluster.api_client() as api:
        install_crds(api, [WIDGET_CRD, *kopf_peering_crds()])
        custom = custom_api(api)
        ensure(
            lambda: custom.create_namespaced_custom_object(
                "kopf.dev",
                "v1",
                namespace,
                "kopfpeerings",
                {
                    "apiVersion": "kopf.dev/v1",
                    "kind": "KopfPeering",
                    "metadata": {"name": "default"},
                },
            )
        )
    log = (tmp_path / "kopf.log").open("w")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--namespace",
            namespace,
            "--peering",
            "default",
            "--verbose",
            str(OPERATOR),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        stop_process(process, timeout=20)
        log.close()
    assert process.returncode in (0, -15), (tmp_path / "kopf.log").read_text()


def test_kopf_handles_create_update_delete_with_peering(
    cluster: Cluster, namespace: str, kopf_operator: None
) -> None:
    with cluster.api_client() as api:
        custom = custom_api(api)
        core = core_api(api)
        widget = {
            "apiVersion": "test.elasticlm.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"name": "devcluster", "size": 1},
        }
        custom.create_namespaced_custom_object(
            "test.elasticlm.io", "v1", namespace, "widgets", widget
        )

        def status() -> dict[str, Any]:
            obj = custom.get_namespaced_custom_object(
                "test.elasticlm.io", "v1", namespace, "widgets", "w1"
            )
            result: dict[str, Any] = obj.get("status") or {}
            return result

        wait_for(lambda: status().get("greeting") == "hello devcluster", what="the create handler")

        custom.patch_namespaced_custom_object(
            "test.elasticlm.io", "v1", namespace, "widgets", "w1", {"spec": {"size": 3}}
        )
        wait_for(lambda: status().get("observedSize") == 3, what="the update handler")

        # kopf's peering object shows this operator as a live peer.
        peering = custom.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", "default"
        )
        assert peering.get("status"), peering

        custom.delete_namespaced_custom_object(
            "test.elasticlm.io", "v1", namespace, "widgets", "w1"
        )

        def gone() -> bool:
            try:
                custom.get_namespaced_custom_object(
                    "test.elasticlm.io", "v1", namespace, "widgets", "w1"
                )
            except kubernetes.client.ApiException as exc:
                return bool(exc.status == 404)
            return False

        wait_for(gone, what="the finalizer to be removed and the widget deleted")
        evidence = core.read_namespaced_config_map("w1-deleted", namespace)
        assert evidence.data == {"by": "kopf"}
