"""metadata.generation: 1 on create, bumped by spec changes only."""

from __future__ import annotations

from typing import Any

from tests.integration.conformance.helpers import (
    GROUP,
    LMTJ,
    VERSION,
    training_job,
)
from tests.kubeclient import CustomApi, ExtensionsApi


def generation(custom: CustomApi, namespace: str, name: str) -> int:
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, name)
    return int(got["metadata"]["generation"])


def test_custom_resource_generation(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    body = training_job("gen")
    body["metadata"]["generation"] = 7  # ignored: the server owns it
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, body)
    assert created["metadata"]["generation"] == 1

    def patch(change: dict[str, Any]) -> dict[str, Any]:
        patched: dict[str, Any] = custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, LMTJ, "gen", change
        )
        return patched

    assert patch({"metadata": {"labels": {"a": "b"}}})["metadata"]["generation"] == 1
    assert patch({"metadata": {"annotations": {"c": "d"}}})["metadata"]["generation"] == 1
    assert patch({"spec": {"replicas": 3}})["metadata"]["generation"] == 2
    assert patch({"spec": {"replicas": 3}})["metadata"]["generation"] == 2  # no change
    assert patch({"spec": {"training": {"steps": 400}}})["metadata"]["generation"] == 3

    status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, LMTJ, "gen", {"status": {"phase": "Running", "step": 5}}
    )
    assert status["status"]["phase"] == "Running"
    assert status["metadata"]["generation"] == 3
    assert generation(custom, namespace, "gen") == 3


def test_put_bumps_generation_only_for_spec_changes(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, training_job("g"))
    current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "g")
    current["metadata"]["labels"] = {"x": "y"}
    same = custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "g", current)
    assert same["metadata"]["generation"] == 1
    assert int(same["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])
    same["spec"]["replicas"] = 1
    changed = custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "g", same)
    assert changed["metadata"]["generation"] == 2


def test_crd_generation(
    extensions: ExtensionsApi, scratch_crd: tuple[str, str, dict[str, Any]]
) -> None:
    name = scratch_crd[2]["metadata"]["name"]
    crd = extensions.read_custom_resource_definition(name)
    assert crd.metadata.generation == 1
    labelled = extensions.patch_custom_resource_definition(
        name, {"metadata": {"labels": {"x": "y"}}}, _content_type="application/merge-patch+json"
    )
    assert labelled.metadata.generation == 1
    changed = extensions.patch_custom_resource_definition(
        name,
        {"spec": {"names": {"shortNames": ["gz"]}}},
        _content_type="application/merge-patch+json",
    )
    assert changed.metadata.generation == 2
    assert changed.spec.names.short_names == ["gz"]
