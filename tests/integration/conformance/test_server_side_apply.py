"""Server-side apply and field ownership (`metadata.managedFields`), written to
Kubernetes' semantics: kubectl's `apply --server-side` (1.27 and 1.33), apply conflicts
worded as kube-apiserver words them, `force`, Update managers beside appliers, the
FieldsV1 shape, and clearing managedFields."""

from __future__ import annotations

import json
import uuid
from typing import Any

import kubernetes
import pytest
import yaml

from tests.crds import install_crds, simple_crd
from tests.integration.conformance.helpers import ApiException, RawResponse, get_json, raw
from tests.integration.harness import Cluster, kubectl_binary
from tests.kubeclient import CoreApi, ExtensionsApi

APPLY = "application/apply-patch+yaml"
Obj = dict[str, Any]


@pytest.fixture(params=[27, 33], ids=["kubectl1.27", "kubectl1.33"])
def minor(request: pytest.FixtureRequest) -> int:
    if kubectl_binary(request.param) is None:
        pytest.skip(f"kubectl 1.{request.param} is not installed next to the kubectl dispatcher")
    return int(request.param)


def configmap(name: str, data: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def deployment(name: str, env: list[str], finalizers: list[str] | None = None) -> Obj:
    metadata: Obj = {"name": name}
    if finalizers:
        metadata["finalizers"] = finalizers
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "python:3.12-alpine",
                            "env": [{"name": e, "value": "1"} for e in env],
                        }
                    ]
                },
            },
        },
    }


def apply(
    api: kubernetes.client.ApiClient, path: str, obj: Obj, manager: str, force: bool = False
) -> RawResponse:
    query: dict[str, Any] = {"fieldManager": manager}
    if force:
        query["force"] = "true"
    return raw(api, "PATCH", path, body=yaml.safe_dump(obj), content_type=APPLY, query=query)


def cm_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps/{name}"


def entries(obj: Obj) -> dict[tuple[str, str], Obj]:
    """managedFields by (manager, operation)."""
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


def test_kubectl_server_side_apply_removes_a_dropped_field(
    cluster: Cluster, namespace: str, minor: int
) -> None:
    first = configmap("ssa", {"kept": "1", "dropped": "2"})
    for manifest in (first, configmap("ssa", {"kept": "1"})):
        cluster.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", "-",
            input=yaml.safe_dump(manifest), minor=minor,
        )  # fmt: skip
    out = cluster.kubectl(
        "get", "configmap", "ssa", "-n", namespace, "-o", "json", "--show-managed-fields",
        minor=minor,
    ).stdout  # fmt: skip
    live = json.loads(out)
    assert live["data"] == {"kept": "1"}
    applied = entries(live)[("kubectl", "Apply")]
    assert applied["fieldsV1"] == {"f:data": {"f:kept": {}}}
    assert applied["fieldsType"] == "FieldsV1"
    assert applied["apiVersion"] == "v1"
    assert applied["time"].endswith("Z")
    hidden = cluster.kubectl(
        "get", "configmap", "ssa", "-n", namespace, "-o", "yaml", minor=minor
    ).stdout
    assert "managedFields" not in hidden  # kubectl hides them unless asked


def test_kubectl_server_side_apply_removes_a_dropped_list_item(
    cluster: Cluster, namespace: str, minor: int
) -> None:
    for env in (["A", "B"], ["A"]):
        cluster.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", "-",
            input=yaml.safe_dump(deployment("ssa-env", env)), minor=minor,
        )  # fmt: skip
    out = cluster.kubectl(
        "get", "deployment", "ssa-env", "-n", namespace, "-o", "json", minor=minor
    ).stdout
    container = json.loads(out)["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["A"]


def test_kubectl_apply_conflict_and_force_conflicts(
    cluster: Cluster, namespace: str, minor: int
) -> None:
    def kubectl_apply(value: str, manager: str, *flags: str) -> Any:
        return cluster.kubectl(
            "apply", "--server-side", f"--field-manager={manager}", *flags, "-n", namespace,
            "-f", "-", input=yaml.safe_dump(configmap("ssa-conflict", {"key": value})),
            minor=minor, check=False,
        )  # fmt: skip

    assert kubectl_apply("1", "alice").returncode == 0
    refused = kubectl_apply("2", "bob")
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "alice": .data.key' in refused.stderr
    forced = kubectl_apply("2", "bob", "--force-conflicts")
    assert forced.returncode == 0, forced.stderr
    out = cluster.kubectl(
        "get", "configmap", "ssa-conflict", "-n", namespace, "-o", "json",
        "--show-managed-fields", minor=minor,
    ).stdout  # fmt: skip
    live = json.loads(out)
    assert live["data"] == {"key": "2"}
    assert list(entries(live)) == [("bob", "Apply")]  # alice owned nothing else


def test_conflict_status_names_every_manager_and_field(core: CoreApi, namespace: str) -> None:
    api = core.api_client
    path = cm_path(namespace, "ssa-status")
    assert apply(api, path, configmap("ssa-status", {"a": "1", "b": "1"}), "alice").status == 201
    # An Update manager takes the field it changes (from the applier).
    patched = raw(
        api, "PATCH", path, body={"data": {"b": "2"}},
        content_type="application/merge-patch+json", query={"fieldManager": "editor"},
    )  # fmt: skip
    assert patched.status == 200, patched
    answer = apply(api, path, configmap("ssa-status", {"a": "3", "b": "3"}), "bob")
    assert answer.status == 409, answer
    status = answer.json()
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 2 conflicts: conflicts with "alice":\n- .data.a\n'
        'conflicts with "editor" using v1:\n- .data.b'
    )
    causes = status["details"]["causes"]
    assert {(c["reason"], c["message"], c["field"]) for c in causes} == {
        ("FieldManagerConflict", 'conflict with "alice"', ".data.a"),
        ("FieldManagerConflict", 'conflict with "editor" using v1', ".data.b"),
    }
    # Applying the values the others set is no conflict: the fields become shared.
    shared = apply(api, path, configmap("ssa-status", {"a": "1", "b": "2"}), "bob")
    assert shared.status == 200, shared
    owners = entries(shared.json())
    assert owners[("bob", "Apply")]["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    assert owners[("alice", "Apply")]["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert owners[("editor", "Update")]["fieldsV1"] == {"f:data": {"f:b": {}}}


def test_an_update_managers_field_survives_another_apply(core: CoreApi, namespace: str) -> None:
    api = core.api_client
    path = cm_path(namespace, "ssa-update")
    assert apply(api, path, configmap("ssa-update", {"mine": "1", "old": "1"}), "applier").status
    patched = raw(
        api, "PATCH", path, body={"data": {"theirs": "1"}},
        content_type="application/merge-patch+json", query={"fieldManager": "editor"},
    )  # fmt: skip
    assert patched.status == 200, patched
    # An Update that writes a value unchanged takes nothing; one that changes it takes
    # the field from the applier, so the applier dropping it later leaves it.
    same = raw(
        api, "PATCH", path, body={"data": {"mine": "1"}},
        content_type="application/merge-patch+json", query={"fieldManager": "idle"},
    )  # fmt: skip
    assert same.status == 200
    assert ("idle", "Update") not in entries(same.json())
    changed = raw(
        api, "PATCH", path, body={"data": {"old": "2"}},
        content_type="application/merge-patch+json", query={"fieldManager": "keeper"},
    )  # fmt: skip
    assert changed.status == 200
    assert entries(changed.json())[("keeper", "Update")]["fieldsV1"] == {"f:data": {"f:old": {}}}
    answer = apply(api, path, configmap("ssa-update", {"mine": "2"}), "applier")
    assert answer.status == 200, answer
    assert answer.json()["data"] == {"mine": "2", "theirs": "1", "old": "2"}
    # Dropped by the applier and owned by nobody else: removed.
    again = apply(api, path, configmap("ssa-update", {}), "applier")
    assert again.json()["data"] == {"theirs": "1", "old": "2"}
    # kube-apiserver names a manager without fieldManager after the User-Agent.
    core.patch_namespaced_config_map("ssa-update", namespace, {"data": {"ua": "1"}})
    live = get_json(api, path)
    assert any(e["manager"] == "OpenAPI-Generator" for e in live["metadata"]["managedFields"])


def test_managed_fields_shape(core: CoreApi, namespace: str) -> None:
    api = core.api_client
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/ssa-shape"
    manifest = deployment("ssa-shape", ["A"], finalizers=["example.com/hold"])
    answer = apply(api, path, manifest, "shaper")
    assert answer.status == 201, answer
    fields = entries(answer.json())[("shaper", "Apply")]["fieldsV1"]
    assert fields["f:metadata"]["f:finalizers"] == {'v:"example.com/hold"': {}}
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert container["."] == {}
    assert container["f:env"]['k:{"name":"A"}'] == {".": {}, "f:name": {}, "f:value": {}}
    assert fields["f:spec"]["f:replicas"] == {}
    assert fields["f:spec"]["f:selector"] == {}  # a LabelSelector is atomic
    # The finalizer would block the namespace's deletion: the applier drops it.
    manifest["metadata"].pop("finalizers")
    answer = apply(api, path, manifest, "shaper")
    assert "finalizers" not in answer.json()["metadata"]


def test_requests_clear_managed_fields(core: CoreApi, namespace: str) -> None:
    api = core.api_client
    path = cm_path(namespace, "ssa-clear")
    assert apply(api, path, configmap("ssa-clear", {"a": "1"}), "applier").status == 201
    cleared = raw(
        api, "PATCH", path, body={"metadata": {"managedFields": [{}]}},
        content_type="application/merge-patch+json", query={"fieldManager": "clearer"},
    )  # fmt: skip
    assert cleared.status == 200, cleared
    assert "managedFields" not in cleared.json()["metadata"]
    # An apply after that finds the fields owned by before-first-apply, an Update manager.
    answer = apply(api, path, configmap("ssa-clear", {"a": "2"}), "applier")
    assert answer.status == 409
    assert 'conflict with "before-first-apply" using v1: .data.a' in answer.json()["message"]
    live = get_json(api, path)
    live["metadata"]["managedFields"] = []
    put = raw(api, "PUT", path, body=live, query={"fieldManager": "putter"})
    assert put.status == 200, put
    assert "managedFields" not in put.json()["metadata"]
    refused = apply(
        api, path, {**configmap("ssa-clear", {}), "metadata": {"name": "ssa-clear",
                                                             "managedFields": [{}]}}, "x"
    )  # fmt: skip
    assert refused.status == 400
    assert "metadata.managedFields must be nil" in refused.json()["message"]


@pytest.fixture
def listy_crd(extensions: ExtensionsApi) -> Any:
    group = f"g{uuid.uuid4().hex[:8]}.conformance.elasticlm.io"
    item = {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "string"}}}
    crd = simple_crd(
        group, "Listy", "listies",
        spec_properties={
            "byName": {"type": "array", "items": {**item, "required": ["name"]},
                       "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            "tags": {"type": "array", "items": {"type": "string"},
                     "x-kubernetes-list-type": "set"},
            "whole": {"type": "array", "items": item},
        },
    )  # fmt: skip
    install_crds(extensions.api_client, [crd])
    yield group
    try:
        extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_custom_resource_list_types(core: CoreApi, namespace: str, listy_crd: str) -> None:
    api = core.api_client
    path = f"/apis/{listy_crd}/v1/namespaces/{namespace}/listies/l"

    def listy(by_name: list[str], tags: list[str], whole: list[str]) -> Obj:
        return {
            "apiVersion": f"{listy_crd}/v1",
            "kind": "Listy",
            "metadata": {"name": "l"},
            "spec": {
                "byName": [{"name": n, "v": n} for n in by_name],
                "tags": tags,
                "whole": [{"name": n} for n in whole],
            },
        }

    assert apply(api, path, listy(["a"], ["x"], ["p"]), "one").status == 201
    answer = apply(api, path, listy(["b"], ["y"], ["q"]), "two")
    assert answer.status == 409  # `whole` is atomic: one field, owned by "one"
    assert 'conflict with "one": .spec.whole' in answer.json()["message"]
    answer = apply(api, path, listy(["b"], ["y"], ["p"]), "two")
    assert answer.status == 200, answer
    spec = answer.json()["spec"]
    assert [i["name"] for i in spec["byName"]] == ["a", "b"]  # merged by key
    assert spec["tags"] == ["x", "y"]  # merged as a set
    fields = entries(answer.json())[("two", "Apply")]["fieldsV1"]["f:spec"]
    assert set(fields["f:byName"]) == {'k:{"name":"b"}'}
    assert fields["f:tags"] == {'v:"y"': {}}
    assert fields["f:whole"] == {}
    answer = apply(api, path, listy([], [], ["p"]), "one")
    spec = answer.json()["spec"]
    assert [i["name"] for i in spec["byName"]] == ["b"]
    assert spec["tags"] == ["y"]


def test_a_scale_write_is_recorded_for_its_subresource(core: CoreApi, namespace: str) -> None:
    api = core.api_client
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/ssa-scale"
    assert apply(api, path, deployment("ssa-scale", []), "applier").status == 201
    scaled = raw(
        api, "PATCH", path + "/scale", body={"spec": {"replicas": 0}},
        content_type="application/merge-patch+json", query={"fieldManager": "scaler"},
    )  # fmt: skip
    assert scaled.status == 200, scaled
    scaled = raw(
        api, "PATCH", path + "/scale", body={"spec": {"replicas": 1}},
        content_type="application/merge-patch+json", query={"fieldManager": "scaler"},
    )  # fmt: skip
    assert scaled.status == 200, scaled
    live = get_json(api, path)
    scaler = entries(live)[("scaler", "Update")]
    assert scaler["subresource"] == "scale"
    assert scaler["apiVersion"] == "apps/v1"
    assert scaler["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    answer = apply(api, path, deployment("ssa-scale", []), "applier")
    assert answer.status == 409
    assert answer.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "scaler" with subresource "scale" using '
        "apps/v1: .spec.replicas"
    )


def test_kubectl_moves_client_side_apply_to_server_side(
    cluster: Cluster, namespace: str, minor: int
) -> None:
    """kubectl (1.26+) hands the fields of its client-side apply manager over to its
    server-side apply manager by rewriting managedFields before it applies, so the first
    server-side apply removes what the manifest dropped."""
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=yaml.safe_dump(configmap("ssa-csa", {"kept": "1", "dropped": "2"})), minor=minor,
    )  # fmt: skip
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-",
        input=yaml.safe_dump(configmap("ssa-csa", {"kept": "1"})), minor=minor,
    )  # fmt: skip
    out = cluster.kubectl(
        "get", "configmap", "ssa-csa", "-n", namespace, "-o", "json", "--show-managed-fields",
        minor=minor,
    ).stdout  # fmt: skip
    live = json.loads(out)
    assert live["data"] == {"kept": "1"}
    assert ("kubectl-client-side-apply", "Update") not in entries(live)


def test_apply_to_status_owns_only_status(
    core: CoreApi, namespace: str, scratch_status_crd: str
) -> None:
    api = core.api_client
    path = f"/apis/{scratch_status_crd}/v1/namespaces/{namespace}/gadgets/g"
    gadget: Obj = {
        "apiVersion": f"{scratch_status_crd}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": {"size": 1},
    }
    assert apply(api, path, gadget, "owner").status == 201
    # The spec in a status apply is not written, so it conflicts with nobody.
    reported = apply(api, path + "/status", {**gadget, "spec": {"size": 2},
                                            "status": {"ready": True}}, "reporter")  # fmt: skip
    assert reported.status == 200, reported
    live = reported.json()
    assert live["spec"] == {"size": 1}
    assert live["status"] == {"ready": True}
    reporter = entries(live)[("reporter", "Apply")]
    assert reporter["subresource"] == "status"
    assert reporter["fieldsV1"] == {"f:status": {"f:ready": {}}}
    # And status in an apply to the main resource is neither written nor owned.
    again = apply(api, path, {**gadget, "status": {"ready": False}}, "owner")
    assert again.json()["status"] == {"ready": True}
    assert "f:status" not in entries(again.json())[("owner", "Apply")]["fieldsV1"]


@pytest.fixture
def scratch_status_crd(extensions: ExtensionsApi) -> Any:
    group = f"g{uuid.uuid4().hex[:8]}.conformance.elasticlm.io"
    crd = simple_crd(
        group, "Gadget", "gadgets", spec_properties={"size": {"type": "integer"}},
        status_subresource=True,
    )  # fmt: skip
    install_crds(extensions.api_client, [crd])
    yield group
    try:
        extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_force_is_refused_on_other_patches(core: CoreApi, namespace: str) -> None:
    api = core.api_client
    path = cm_path(namespace, "ssa-force")
    assert apply(api, path, configmap("ssa-force", {"a": "1"}), "applier").status == 201
    answer = raw(
        api, "PATCH", path, body={"data": {"a": "2"}},
        content_type="application/merge-patch+json", query={"force": "true"},
    )  # fmt: skip
    assert answer.status == 422, answer
    assert answer.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for '
        "non-apply patch"
    )
