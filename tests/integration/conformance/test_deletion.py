"""Deletion: finalizers, ownerReference cascades, namespaces, deletecollection."""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes

from tests.integration.conformance.helpers import (
    CONTROLLER_TIMEOUT,
    GROUP,
    LMTJ,
    NOT_YET,
    POD_TIMEOUT,
    VERSION,
    WatchStream,
    api_error,
    gone,
    python_pod,
    raw,
    training_job,
    wait_default_service_account,
)
from tests.kubeclient import CoreApi, CustomApi
from tests.waiting import wait_for

HOLD = "conformance.elasticlm.io/hold"


def owner_ref(owner: object, block: bool = False, kind: str = "ConfigMap") -> dict[str, Any]:
    meta = owner.metadata  # type: ignore[attr-defined]
    return {
        "apiVersion": "v1",
        "kind": kind,
        "name": meta.name,
        "uid": meta.uid,
        "blockOwnerDeletion": block,
    }


def make_family(core: CoreApi, namespace: str, block: bool = False, hold: bool = False) -> None:
    """ConfigMap `owner` and dependents `d1` (optionally with a finalizer) and `d2`."""
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    for name in ("d1", "d2"):
        meta: dict[str, Any] = {"name": name, "ownerReferences": [owner_ref(owner, block)]}
        if hold and name == "d1":
            meta["finalizers"] = [HOLD]
        core.create_namespaced_config_map(namespace, {"metadata": meta})


def cm_gone(core: CoreApi, namespace: str, name: str) -> bool:
    return gone(lambda: core.read_namespaced_config_map(name, namespace))


def test_finalizers_hold_deletion(core: CoreApi, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "held", "finalizers": [HOLD]}, "data": {"a": "1"}}
    )
    core.delete_namespaced_config_map("held", namespace)
    held = core.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.deletion_grace_period_seconds == 0
    assert held.metadata.finalizers == [HOLD]
    # deleting again changes nothing; updates are still allowed
    core.delete_namespaced_config_map("held", namespace)
    core.patch_namespaced_config_map("held", namespace, {"data": {"a": "2"}})
    status = api_error(
        422,
        core.patch_namespaced_config_map,
        "held",
        namespace,
        {"metadata": {"finalizers": [HOLD, "conformance.elasticlm.io/late"]}},
        _content_type="application/merge-patch+json",
    )
    assert status["reason"] == "Invalid"
    core.patch_namespaced_config_map(
        "held",
        namespace,
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    assert cm_gone(core, namespace, "held")


def test_background_cascade(core: CoreApi, namespace: str) -> None:
    make_family(core, namespace)
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    assert cm_gone(core, namespace, "owner")
    wait_for(
        lambda: cm_gone(core, namespace, "d1") and cm_gone(core, namespace, "d2"),
        CONTROLLER_TIMEOUT,
        "the dependents to be garbage collected",
        retry_on=NOT_YET,
    )


def test_default_propagation_deletes_dependents(core: CoreApi, namespace: str) -> None:
    make_family(core, namespace)
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        lambda: all(cm_gone(core, namespace, n) for n in ("owner", "d1", "d2")),
        CONTROLLER_TIMEOUT,
        "owner and dependents to be deleted",
        retry_on=NOT_YET,
    )


def test_foreground_cascade(core: CoreApi, namespace: str) -> None:
    make_family(core, namespace, block=True, hold=True)
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Foreground")
    owner = core.read_namespaced_config_map("owner", namespace)
    assert owner.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in owner.metadata.finalizers
    # the garbage collector deletes the dependents first; d1 is held by its finalizer
    wait_for(
        lambda: core.read_namespaced_config_map("d1", namespace).metadata.deletion_timestamp,
        CONTROLLER_TIMEOUT,
        "d1 to be deleted by the garbage collector",
        retry_on=NOT_YET,
    )
    wait_for(
        lambda: cm_gone(core, namespace, "d2"),
        CONTROLLER_TIMEOUT,
        "d2 to be deleted",
        retry_on=NOT_YET,
    )
    assert not cm_gone(core, namespace, "owner"), "owner went before its blocking dependent"
    core.patch_namespaced_config_map(
        "d1",
        namespace,
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: cm_gone(core, namespace, "d1") and cm_gone(core, namespace, "owner"),
        CONTROLLER_TIMEOUT,
        "d1, then the owner, to be deleted",
        retry_on=NOT_YET,
    )


def test_orphan_propagation(core: CoreApi, namespace: str) -> None:
    make_family(core, namespace)
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")
    wait_for(
        lambda: cm_gone(core, namespace, "owner"),
        CONTROLLER_TIMEOUT,
        "the owner to go",
        retry_on=NOT_YET,
    )
    for name in ("d1", "d2"):
        dependent = core.read_namespaced_config_map(name, namespace)
        assert dependent.metadata.deletion_timestamp is None
        assert not dependent.metadata.owner_references, name


def test_dependent_of_a_missing_owner_is_collected(core: CoreApi, namespace: str) -> None:
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "never-existed",
        "uid": str(uuid.uuid4()),
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "stray", "ownerReferences": [ghost]}}
    )
    wait_for(
        lambda: cm_gone(core, namespace, "stray"),
        CONTROLLER_TIMEOUT,
        "the dependent of a missing owner to be collected",
        retry_on=NOT_YET,
    )


def test_custom_resource_owns_pods_and_configmaps(
    core: CoreApi,
    custom: CustomApi,
    namespace: str,
    elasticlm_crds: list[str],
) -> None:
    wait_default_service_account(core, namespace)
    job = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, LMTJ, training_job("owner")
    )
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LMTrainingJob",
        "name": "owner",
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg", "ownerReferences": [ref]}}
    )
    pod = python_pod("worker", "import time; time.sleep(600)", grace=1)
    pod["metadata"]["ownerReferences"] = [ref]
    core.create_namespaced_pod(namespace, pod)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "owner")
    wait_for(
        lambda: (
            cm_gone(core, namespace, "cfg")
            and gone(lambda: core.read_namespaced_pod("worker", namespace))
        ),
        POD_TIMEOUT,
        "the job's pod and configmap to be collected",
        retry_on=NOT_YET,
    )


def test_namespace_deletion_removes_its_contents(
    core: CoreApi,
    custom: CustomApi,
    elasticlm_crds: list[str],
) -> None:
    name = f"t-del-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_default_service_account(core, name)
    core.create_namespaced_config_map(name, {"metadata": {"name": "cm", "finalizers": [HOLD]}})
    core.create_namespaced_secret(name, {"metadata": {"name": "s"}})
    custom.create_namespaced_custom_object(GROUP, VERSION, name, LMTJ, training_job("j"))
    core.create_namespaced_pod(name, python_pod("p", "import time; time.sleep(600)", grace=1))

    core.delete_namespace(name)
    terminating = core.read_namespace(name)  # held by the finalizer of cm
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.status.phase == "Terminating"
    status = api_error(403, core.create_namespaced_config_map, name, {"metadata": {"name": "new"}})
    assert status["reason"] == "Forbidden"

    wait_for(
        lambda: core.read_namespaced_config_map("cm", name).metadata.deletion_timestamp,
        CONTROLLER_TIMEOUT,
        "the namespace's configmap to be deleted",
        retry_on=NOT_YET,
    )
    wait_for(
        lambda: (
            gone(lambda: core.read_namespaced_secret("s", name))
            and gone(lambda: core.read_namespaced_pod("p", name))
            and gone(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, name, LMTJ, "j"))
        ),
        POD_TIMEOUT,
        "the namespace's contents to be deleted",
        retry_on=NOT_YET,
    )
    core.patch_namespaced_config_map(
        "cm", name, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    wait_for(
        lambda: gone(lambda: core.read_namespace(name)),
        CONTROLLER_TIMEOUT,
        "the namespace to be deleted",
        retry_on=NOT_YET,
    )


def test_deletecollection(core: CoreApi, namespace: str) -> None:
    for i in range(4):
        labels = {"batch": "old" if i < 3 else "new"}
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"c{i}", "labels": labels}}
        )
    core.delete_collection_namespaced_config_map(namespace, label_selector="batch=old")
    left = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
    assert "c3" in left
    assert not {"c0", "c1", "c2"} & set(left)
    core.delete_collection_namespaced_config_map(namespace, field_selector="metadata.name=c3")
    assert cm_gone(core, namespace, "c3")


def test_deletecollection_of_custom_resources(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    for name in ("a", "b"):
        body = training_job(name)
        body["metadata"]["labels"] = {"set": name}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, body)
    custom.delete_collection_namespaced_custom_object(
        GROUP, VERSION, namespace, LMTJ, label_selector="set=a"
    )
    left = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ)["items"]
    assert [i["metadata"]["name"] for i in left] == ["b"]


def test_delete_responses(api: kubernetes.client.ApiClient, core: CoreApi,
                          namespace: str) -> None:  # fmt: skip
    """Deleted at once: a Success Status naming the object; held by a finalizer: the
    object itself, with its deletionTimestamp."""
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "now"}})
    response = raw(api, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/now")
    assert response.status == 200, response
    status = response.json()
    assert status["kind"] == "Status"
    assert status["status"] == "Success"
    assert status["details"]["name"] == "now"
    assert status["details"]["kind"] == "configmaps"
    assert status["details"]["uid"] == created.metadata.uid

    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "later", "finalizers": [HOLD]}}
    )
    response = raw(api, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/later")
    assert response.status == 200, response
    held = response.json()
    assert held["kind"] == "ConfigMap"
    assert held["metadata"]["deletionTimestamp"]
    core.patch_namespaced_config_map(
        "later", namespace, {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip


def test_watch_sees_finalized_deletion(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    with WatchStream(api, f"/api/v1/namespaces/{namespace}/configmaps", resourceVersion=rv) as w:
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "f", "finalizers": [HOLD]}}
        )
        core.delete_namespaced_config_map("f", namespace)
        core.patch_namespaced_config_map(
            "f", namespace, {"metadata": {"finalizers": None}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        events = w.until(lambda e: e["type"] == "DELETED")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["metadata"]["deletionTimestamp"]
    assert events[1]["object"]["metadata"]["finalizers"] == [HOLD]
    assert events[2]["object"]["metadata"]["deletionTimestamp"]
