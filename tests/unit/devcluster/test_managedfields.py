"""Field ownership without HTTP: FieldsV1, list types, Update and Apply bookkeeping,
pruning and conflicts (devcluster.apiserver.managedfields)."""

from __future__ import annotations

from typing import Any

import pytest

from devcluster.apiserver import managedfields as mf
from devcluster.resources.types import ResourceType
from devcluster.store import APIError

DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True)
CONFIGMAPS = ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True)
SERVICES = ResourceType("", "v1", "services", "service", "Service", True, status=True)


def pod_template(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "resourceVersion": "1"},
        "spec": {"template": {"spec": {"containers": containers}}},
    }


def test_fields_v1_round_trip_marks_members_with_children() -> None:
    paths = {
        ("f:spec", "f:replicas"),
        ("f:spec", "f:list", 'k:{"name":"a"}'),
        ("f:spec", "f:list", 'k:{"name":"a"}', "f:name"),
        ("f:metadata", "f:finalizers", 'v:"x"'),
    }
    tree = mf.to_fields_v1(paths)
    assert tree["f:spec"]["f:list"]['k:{"name":"a"}'] == {".": {}, "f:name": {}}
    assert tree["f:spec"]["f:replicas"] == {}
    assert mf.from_fields_v1(tree) == paths


def test_from_fields_v1_rejects_an_unknown_element() -> None:
    with pytest.raises(ValueError, match="unknown path element 'x:1'"):
        mf.from_fields_v1({"f:spec": {"x:1": {}}})


def test_builtin_list_types_use_the_merge_keys_and_kube_multi_keys() -> None:
    schema = mf.Schema(DEPLOYMENTS)
    containers = ("spec", "template", "spec", "containers")
    assert schema.list_type(containers) == ("map", ("name",))
    assert schema.list_type((*containers[:-1], "containers[]", "ports")) == (
        "map",
        ("containerPort", "protocol"),
    )
    assert schema.list_type((*containers[:-1], "containers[]", "args")) == ("atomic", ())
    assert schema.list_type(("metadata", "finalizers")) == ("set", ())
    assert schema.atomic_map(("spec", "selector"))
    assert mf.Schema(SERVICES).list_type(("spec", "ports")) == ("map", ("port", "protocol"))


def test_a_port_without_protocol_is_keyed_by_the_default() -> None:
    element = mf.item_element({"containerPort": 80}, 0, "map", ("containerPort", "protocol"))
    assert element == 'k:{"containerPort":80,"protocol":"TCP"}'


def test_update_takes_changed_fields_and_drops_removed_ones() -> None:
    live: dict[str, Any] = {"metadata": {"name": "c"}, "data": {"a": "1", "b": "1"}}
    entries = mf.update(CONFIGMAPS, None, live, None, "creator", None)
    assert entries[0]["fieldsV1"] == {"f:data": {".": {}, "f:a": {}, "f:b": {}}}
    live["metadata"]["managedFields"] = entries
    new = {"metadata": {"name": "c"}, "data": {"a": "2"}}
    entries = mf.update(CONFIGMAPS, live, new, None, "editor", None)
    owners = {e["manager"]: e["fieldsV1"] for e in entries}
    assert owners == {"creator": {"f:data": {}}, "editor": {"f:data": {"f:a": {}}}}


def test_update_with_reset_managed_fields_clears_them() -> None:
    live: dict[str, Any] = {"metadata": {"name": "c"}, "data": {"a": "1"}}
    live["metadata"]["managedFields"] = mf.update(CONFIGMAPS, None, live, None, "x", None)
    assert mf.update(CONFIGMAPS, live, live, [{}], "y", None) == []
    assert mf.update(CONFIGMAPS, live, live, [], "y", None) == []


def test_apply_prunes_dropped_items_and_the_maps_they_leave_empty() -> None:
    first = pod_template([{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}]}])
    merged, entries = mf.apply(DEPLOYMENTS, None, first, "helm", None, force=False)
    merged["metadata"]["managedFields"] = entries
    second = pod_template([{"name": "c", "image": "i"}])
    result, entries = mf.apply(DEPLOYMENTS, merged, second, "helm", None, force=False)
    assert result["spec"]["template"]["spec"]["containers"] == [{"name": "c", "image": "i"}]
    container = entries[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert container == {'k:{"name":"c"}': {".": {}, "f:image": {}, "f:name": {}}}


def test_apply_conflicts_name_the_manager_and_path_and_force_takes_them() -> None:
    live: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    live["data"] = {"a": "1"}
    live["metadata"]["managedFields"] = mf.update(CONFIGMAPS, None, live, None, "editor", None)
    config: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    config["data"] = {"a": "2"}
    with pytest.raises(APIError) as info:
        mf.apply(CONFIGMAPS, live, config, "applier", None, force=False)
    assert info.value.code == 409
    assert str(info.value) == (
        'Apply failed with 1 conflict: conflict with "editor" using v1: .data.a'
    )
    result, entries = mf.apply(CONFIGMAPS, live, config, "applier", None, force=True)
    assert result["data"] == {"a": "2"}
    assert {e["manager"]: e["fieldsV1"] for e in entries} == {
        "applier": {"f:data": {"f:a": {}}},
        "editor": {"f:data": {}},  # still owns the map it created
    }


def test_apply_on_the_main_resource_records_no_status() -> None:
    config: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    config["spec"] = {"ports": [{"port": 80}]}
    config["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    _, entries = mf.apply(SERVICES, None, config, "me", None, force=False)
    assert set(entries[0]["fieldsV1"]) == {"f:spec"}
    ports = entries[0]["fieldsV1"]["f:spec"]["f:ports"]
    assert list(ports) == ['k:{"port":80,"protocol":"TCP"}']


def test_user_agent_manager() -> None:
    assert mf.manager_from_user_agent("kubectl/v1.33.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert mf.manager_from_user_agent("OpenAPI-Generator/33.1.0/python") == "OpenAPI-Generator"


@pytest.mark.parametrize(
    ("live", "config", "merged"),
    [
        ("abc", "ca", "bca"),  # shared items follow the configuration
        ("abc", "xb", "axbc"),  # a new item goes where the configuration puts it
        ("ab", "axby", "axby"),
        ("azb", "ba", "zba"),  # items only on the server keep their place
        ("abc", "", "abc"),
    ],
)
def test_associative_lists_merge_in_smd_order(live: str, config: str, merged: str) -> None:
    schema = mf.Schema(DEPLOYMENTS)
    pattern = ("spec", "template", "spec", "containers")
    result = mf.merge(
        [{"name": n} for n in live], [{"name": n, "image": "i"} for n in config], schema, pattern
    )
    assert "".join(item["name"] for item in result) == merged
    assert all(item.get("image") == "i" for item in result if item["name"] in config)


def test_a_dropped_item_goes_although_another_manager_owns_a_field_in_it() -> None:
    """As structured-merge-diff prunes: an item stays only when another manager owns the
    item itself, not merely a field inside it."""
    both = pod_template([{"name": "a", "image": "i"}, {"name": "b", "image": "i"}])
    live, entries = mf.apply(DEPLOYMENTS, None, both, "helm", None, force=False)
    live["metadata"]["managedFields"] = entries
    retagged = pod_template([{"name": "a", "image": "j"}, {"name": "b", "image": "i"}])
    live["metadata"]["managedFields"] = mf.update(DEPLOYMENTS, live, retagged, None, "ci", None)
    live["spec"] = retagged["spec"]
    only_b = pod_template([{"name": "b", "image": "i"}])
    result, _ = mf.apply(DEPLOYMENTS, live, only_b, "helm", None, force=False)
    assert result["spec"]["template"]["spec"]["containers"] == [{"name": "b", "image": "i"}]
