"""The devcluster API server on a real port, driven by the official kubernetes client and kopf."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from devcluster.apiserver.app import ServerThread
from lmoperator.api.kinds import TRAINING_JOB
from tests.crds import install_crds, kopf_peering_crds, project_crds
from tests.kubeclient import core_api, custom_api
from tests.unit.devcluster.test_apiserver_support import example
from tests.waiting import wait_for

JSON = dict[str, Any]
GROUP, VERSION, PLURAL = TRAINING_JOB.group, TRAINING_JOB.version, TRAINING_JOB.plural


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("apiserver"), bookmark_interval=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def api_client(server: ServerThread) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = server.url
    with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture(scope="module")
def crds(api_client: client.ApiClient) -> None:
    install_crds(api_client, project_crds())


def test_core_objects_through_the_client(api_client: client.ApiClient) -> None:
    core: Any = core_api(api_client)
    namespaces = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system"} <= namespaces
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="c1")))
    assert created is not None
    assert created.status.phase == "Active"
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", labels={"app": "x"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1")]),
    )
    made = core.create_namespaced_pod("c1", pod)
    assert made.metadata.uid
    assert made.metadata.resource_version
    assert made.spec.node_name == "devcluster"
    assert made.status.phase == "Pending"
    listed = core.list_namespaced_pod("c1", label_selector="app=x")
    assert [p.metadata.name for p in listed.items] == ["p"]
    assert core.list_namespaced_pod("c1", label_selector="app=y").items == []

    cm = core.create_namespaced_config_map(
        "c1", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"a": "1"})
    )
    cm.data["a"] = "2"
    replaced = core.replace_namespaced_config_map("cm", "c1", cm)
    assert replaced.data == {"a": "2"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("cm", "c1", cm)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", "c1")
    assert missing.value.status == 404
    patched = core.patch_namespaced_config_map("cm", "c1", {"data": {"b": "3"}})
    assert patched.data == {"a": "2", "b": "3"}

    status = core.patch_namespaced_pod_status("p", "c1", {"status": {"phase": "Running"}})
    assert status.status.phase == "Running"
    svc = core.create_namespaced_service(
        "c1",
        client.V1Service(
            metadata=client.V1ObjectMeta(name="svc"),
            spec=client.V1ServiceSpec(selector={"app": "x"}, ports=[client.V1ServicePort(port=80)]),
        ),
    )
    assert svc.spec.cluster_ip.startswith("127.96.")
    deleted = core.delete_namespaced_pod("p", "c1", grace_period_seconds=0)
    assert deleted.metadata.name == "p"
    core.delete_namespace("c1")
    wait_for(
        lambda: "c1" not in {n.metadata.name for n in core.list_namespace().items},
        what="namespace c1 to be deleted",
    )


def test_watch_through_the_client(api_client: client.ApiClient) -> None:
    core: Any = core_api(api_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"))
    first = core.create_namespaced_config_map("default", body)

    # A watch from a resourceVersion replays every later change, made before it or not.
    core.patch_namespaced_config_map("w", "default", {"data": {"x": "1"}})
    core.delete_namespaced_config_map("w", "default")
    seen = []
    watcher: Any = watch.Watch()  # type: ignore[no-untyped-call]
    for event in watcher.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=first.metadata.resource_version,
        timeout_seconds=3,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            break
    assert seen == [("MODIFIED", "w"), ("DELETED", "w")]


def test_custom_resources_through_the_client(api_client: client.ApiClient, crds: None) -> None:
    custom: Any = custom_api(api_client)
    job = example("LMTrainingJob")
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, job)
    assert created is not None
    assert created["metadata"]["generation"] == 1
    bad = copy.deepcopy(job)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["training"]["precision"] = "fp64"
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, bad)
    assert invalid.value.status == 422
    assert "spec.training.precision" in str(invalid.value.body)

    scale = custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, "default", PLURAL, "tiny-lm", {"spec": {"replicas": 3}}
    )
    assert scale["spec"]["replicas"] == 3
    current = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "tiny-lm")
    assert current["spec"]["replicas"] == 3
    assert current["metadata"]["generation"] == 2
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "tiny-lm", {"status": {"phase": "Running"}}
    )
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert listed["kind"] == "LMTrainingJobList"
    assert listed["items"][0]["status"]["phase"] == "Running"
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "tiny-lm")
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "tiny-lm")
    assert gone.value.status == 404


OPERATOR = """
import os

import kopf

@kopf.on.login()
def login(**_):
    return kopf.ConnectionInfo(server=os.environ["DEVCLUSTER_URL"], default_namespace="default")

@kopf.on.startup()
def configure(settings, **_):
    settings.watching.server_timeout = 3
    settings.peering.priority = 5

@kopf.on.create("elasticlm.io", "v1alpha1", "lmservices")
def created(spec, patch, **_):
    patch.status["phase"] = "Pending"

@kopf.on.update("elasticlm.io", "v1alpha1", "lmservices")
def updated(patch, **_):
    patch.status["phase"] = "Loading"

@kopf.on.delete("elasticlm.io", "v1alpha1", "lmservices")
def deleted(name, **_):
    kopf.info({}, reason="Gone", message=name)
"""


def test_kopf_operator_with_peering(
    server: ServerThread,
    api_client: client.ApiClient,
    crds: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kopf.testing import KopfRunner

    install_crds(api_client, kopf_peering_crds())
    custom: Any = custom_api(api_client)
    custom.create_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", {"metadata": {"name": "default"}}
    )
    monkeypatch.setenv("DEVCLUSTER_URL", server.url)
    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR)

    def get() -> JSON:
        obj: JSON = custom.get_namespaced_custom_object(
            GROUP, VERSION, "default", "lmservices", "tiny-lm"
        )
        return obj

    with KopfRunner(["run", "--all-namespaces", str(operator)], timeout=60) as runner:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", "lmservices", example("LMService")
        )
        wait_for(lambda: get().get("status", {}).get("phase") == "Pending", what="phase Pending")
        assert get()["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", "lmservices", "tiny-lm", {"spec": {"replicas": 2}}
        )
        wait_for(lambda: get()["status"]["phase"] == "Loading", what="phase Loading")
        peering = custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", "default"
        )
        assert peering.get("status")  # the operator announced itself
        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "lmservices", "tiny-lm")

        def absent() -> bool:
            try:
                get()
            except ApiException as exc:
                return bool(exc.status == 404)
            return False

        wait_for(absent, what="the finalizer to be removed and the service deleted")
    assert runner.exception is None, runner.exception
    assert runner.exit_code == 0, runner.output
    core: Any = core_api(api_client)
    reasons = {e.reason for e in core.list_namespaced_event("default").items}
    assert "Gone" in reasons or "Logging" in reasons
