"""CustomResourceDefinitions: this project's CRDs and examples, schema validation,
defaulting, pruning, CEL rules, the status and scale subresources, CRD lifecycle."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.crds import install_crds, simple_crd
from tests.integration.conformance.helpers import (
    CONTROLLER_TIMEOUT,
    GROUP,
    LMS,
    LMTJ,
    NOT_YET,
    VERSION,
    Obj,
    WatchStream,
    api_error,
    cause_fields,
    gone,
    lm_service,
    raw,
    training_job,
)
from tests.kubeclient import CustomApi, ExtensionsApi
from tests.waiting import wait_for


def create_job(custom: CustomApi, namespace: str, body: Obj) -> Obj:
    created: Obj = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, body)
    return created


def get_job(custom: CustomApi, namespace: str, name: str) -> dict[str, Any]:
    job: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, name)
    return job


def invalid_job(custom: CustomApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create `body`, expect 422 Invalid; returns the Status."""
    status = api_error(
        422, custom.create_namespaced_custom_object, GROUP, VERSION, namespace, LMTJ, body
    )
    assert status["reason"] == "Invalid", status
    assert status["details"]["kind"] == "LMTrainingJob"
    assert status["details"]["group"] == GROUP
    assert status["details"]["name"] == body["metadata"]["name"]
    return status


def cause(status: dict[str, Any], field: str) -> dict[str, Any]:
    for c in status["details"]["causes"]:
        if c.get("field") == field:
            found: dict[str, Any] = c
            return found
    raise AssertionError(f"no cause for {field} in {status}")


@pytest.fixture(autouse=True)
def _crds(elasticlm_crds: list[str]) -> None:
    """Every test here needs this project's CRDs."""


def test_crds_are_established(extensions: ExtensionsApi) -> None:
    for name in ("lmtrainingjobs.elasticlm.io", "lmservices.elasticlm.io"):
        crd = extensions.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True"
        assert conditions.get("NamesAccepted") == "True"
        assert crd.status.accepted_names.kind in ("LMTrainingJob", "LMService")
        assert crd.status.stored_versions == [VERSION]


def test_examples_are_created_with_defaults(custom: CustomApi, namespace: str) -> None:
    job, code, _ = custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, namespace, LMTJ, training_job("tiny-lm")
    )
    assert code == 201
    assert job["kind"] == "LMTrainingJob"
    assert job["apiVersion"] == f"{GROUP}/{VERSION}"
    assert job["metadata"]["generation"] == 1
    assert job["metadata"]["uid"]
    spec = job["spec"]
    assert spec["replicas"] == 2  # given
    assert spec["autoscaling"] == {  # defaulted: {} and then its properties
        "policy": "None",
        "minEfficiency": 0.7,
        "intervalSeconds": 30,
        "cooldownSeconds": 120,
        "pendingTimeoutSeconds": 60,
        "backoffSeconds": 600,
    }
    assert spec["training"]["weightDecay"] == 0.1
    assert spec["training"]["steps"] == 300
    assert spec["data"]["validationFraction"] == 0.01
    assert spec["data"]["tokenizer"] == {"type": "Bytes"}
    assert spec["checkpoint"]["async"] is False
    assert spec["runPolicy"]["suspend"] is False
    assert spec == get_job(custom, namespace, "tiny-lm")["spec"]

    service, code, _ = custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, namespace, LMS, lm_service("tiny-lm")
    )
    assert code == 201
    serving = service["spec"]["serving"]
    assert serving["port"] == 8000  # defaulted
    assert serving["maxQueue"] == 64  # given
    autoscaling = service["spec"]["autoscaling"]
    assert autoscaling["stableWindowSeconds"] == 60
    assert autoscaling["scaleUp"] == {"maxRate": 1000, "stabilizationSeconds": 0}
    assert autoscaling["scaleDown"] == {"maxRate": 2, "stabilizationSeconds": 60}
    listed = raw(api_client(custom), "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{LMS}")
    assert listed.json()["kind"] == "LMServiceList"


def api_client(custom: CustomApi) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = custom.api_client
    return client


def test_type_errors(custom: CustomApi, namespace: str) -> None:
    status = invalid_job(custom, namespace, training_job("t", replicas="two"))
    found = cause(status, "spec.replicas")
    assert found["reason"] == "FieldValueTypeInvalid"
    assert "must be of type integer" in found["message"]
    assert "spec.replicas" in status["message"]
    assert status["message"].startswith('LMTrainingJob.elasticlm.io "t" is invalid')


def test_required_fields(custom: CustomApi, namespace: str) -> None:
    body = training_job("r")
    del body["spec"]["data"]
    status = invalid_job(custom, namespace, body)
    found = cause(status, "spec.data")
    assert found["reason"] == "FieldValueRequired"
    assert "Required value" in found["message"]
    body = training_job("r")
    del body["spec"]["data"]["path"]
    assert cause(invalid_job(custom, namespace, body), "spec.data.path")["reason"] == (
        "FieldValueRequired"
    )


def test_enums(custom: CustomApi, namespace: str) -> None:
    body = training_job("e")
    body["spec"]["data"]["tokenizer"]["type"] = "Words"
    found = cause(invalid_job(custom, namespace, body), "spec.data.tokenizer.type")
    assert found["reason"] == "FieldValueNotSupported"
    assert '"Words"' in found["message"]
    assert '"Bytes"' in found["message"]
    assert '"BPE"' in found["message"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("replicas", 0, "greater than or equal to 1"),
        ("replicas", 5000, "less than or equal to 4096"),
    ],
)
def test_minimum_and_maximum(
    custom: CustomApi, namespace: str, field: str, value: int, words: str
) -> None:
    found = cause(
        invalid_job(custom, namespace, training_job("m", **{field: value})), f"spec.{field}"
    )
    assert words in found["message"]


def test_exclusive_bounds_and_lengths(custom: CustomApi, namespace: str) -> None:
    body = training_job("x")
    body["spec"]["data"]["validationFraction"] = 0.5  # exclusiveMaximum 0.5
    body["spec"]["data"]["path"] = ""  # minLength 1
    status = invalid_job(custom, namespace, body)
    assert "less than 0.5" in cause(status, "spec.data.validationFraction")["message"]
    assert "spec.data.path" in cause_fields(status)


def test_patterns(custom: CustomApi, namespace: str) -> None:
    body = training_job("p")
    body["spec"]["data"]["claimName"] = "Not_A_Name"
    found = cause(invalid_job(custom, namespace, body), "spec.data.claimName")
    assert "should match" in found["message"]
    body = training_job("p")
    body["spec"]["worker"]["resources"]["requests"]["cpu"] = "lots"
    status = invalid_job(custom, namespace, body)
    assert "spec.worker.resources.requests.cpu" in cause_fields(status)


def test_int_or_string_quantities(custom: CustomApi, namespace: str) -> None:
    body = training_job("q")
    body["spec"]["worker"]["resources"]["requests"] = {"cpu": 2, "memory": "1Gi"}
    created = create_job(custom, namespace, body)
    assert created["spec"]["worker"]["resources"]["requests"] == {"cpu": 2, "memory": "1Gi"}


def test_all_errors_reported_together(custom: CustomApi, namespace: str) -> None:
    body = training_job("many", replicas=-1)
    body["spec"]["training"]["precision"] = "fp8"
    body["spec"]["checkpoint"]["keep"] = "three"
    status = invalid_job(custom, namespace, body)
    assert {"spec.replicas", "spec.training.precision", "spec.checkpoint.keep"} <= set(
        cause_fields(status)
    )


def test_duplicate_keys_of_map_lists(custom: CustomApi, namespace: str) -> None:
    body = training_job("dup")
    body["spec"]["worker"]["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    status = invalid_job(custom, namespace, body)
    assert any(f.startswith("spec.worker.env") for f in cause_fields(status)), status
    assert any(c["reason"] == "FieldValueDuplicate" for c in status["details"]["causes"])


def test_unknown_fields_are_pruned(custom: CustomApi, namespace: str) -> None:
    body = training_job("pruned")
    body["spec"]["notInTheSchema"] = {"a": 1}
    body["spec"]["elastic"]["bogus"] = True
    body["topLevelJunk"] = "x"
    body["spec"]["worker"]["podTemplate"] = {"spec": {"anything": ["goes", 1]}}
    created = create_job(custom, namespace, body)
    stored = get_job(custom, namespace, "pruned")
    for obj in (created, stored):
        assert "notInTheSchema" not in obj["spec"]
        assert "bogus" not in obj["spec"]["elastic"]
        assert "topLevelJunk" not in obj
        # x-kubernetes-preserve-unknown-fields keeps everything below it
        assert obj["spec"]["worker"]["podTemplate"] == {"spec": {"anything": ["goes", 1]}}


def test_cel_rule_messages(custom: CustomApi, namespace: str) -> None:
    status = invalid_job(custom, namespace, training_job("cel", replicas=5))
    found = cause(status, "spec")
    assert found["reason"] == "FieldValueInvalid"
    expected = "spec.elastic.maxReplicas (3) must be >= spec.replicas (5)"
    assert expected in found["message"]
    assert expected in status["message"]


def test_cel_rule_with_field_path(custom: CustomApi, namespace: str) -> None:
    body = training_job("celpath")
    body["spec"]["data"]["path"] = "../escape"
    found = cause(invalid_job(custom, namespace, body), "spec.data.path")
    assert "must not contain '..' segments (got '../escape')" in found["message"]


def test_cel_rule_on_metadata_name(custom: CustomApi, namespace: str) -> None:
    name = "n" * 49
    status = invalid_job(custom, namespace, training_job(name))
    assert f"metadata.name ({name}) must be at most 48 characters" in status["message"]


def test_cel_rules_apply_to_updates(custom: CustomApi, namespace: str) -> None:
    create_job(custom, namespace, training_job("upd"))
    status = api_error(
        422,
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "upd",
        {"spec": {"training": {"globalBatchSize": 25}}},
    )
    assert "spec.training.globalBatchSize (25) must be a multiple of" in status["message"]
    assert get_job(custom, namespace, "upd")["spec"]["training"]["globalBatchSize"] == 24


def test_status_subresource(custom: CustomApi, namespace: str) -> None:
    body = training_job("st")
    body["status"] = {"phase": "Running"}
    created = create_job(custom, namespace, body)
    assert "status" not in created or not created["status"]  # dropped on create

    # the main resource ignores status...
    current = get_job(custom, namespace, "st")
    current["status"] = {"phase": "Failed"}
    current["spec"]["replicas"] = 3
    updated = custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, LMTJ, "st", current
    )
    assert updated["spec"]["replicas"] == 3
    assert not updated.get("status")
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, LMTJ, "st", {"status": {"phase": "Failed"}}
    )
    assert not patched.get("status")

    # ...and /status ignores everything but status
    status_body = copy.deepcopy(patched)
    status_body["status"] = {"phase": "Running", "replicas": 3, "step": 7}
    status_body["spec"]["replicas"] = 1
    status_body["metadata"]["labels"] = {"ignored": "yes"}
    written = custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, namespace, LMTJ, "st", status_body
    )
    assert written["status"] == {"phase": "Running", "replicas": 3, "step": 7}
    assert written["spec"]["replicas"] == 3
    assert not (written["metadata"].get("labels") or {}).get("ignored")
    read = custom.get_namespaced_custom_object_status(GROUP, VERSION, namespace, LMTJ, "st")
    assert read["status"]["step"] == 7

    status = api_error(
        422,
        custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "st",
        {"status": {"phase": "Exploded"}},
    )
    assert "status.phase" in cause_fields(status)


def test_scale_subresource(custom: CustomApi, namespace: str) -> None:
    create_job(custom, namespace, training_job("sc"))
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "sc",
        {"status": {"replicas": 2, "selector": "elasticlm.io/job=sc"}},
    )
    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, LMTJ, "sc")
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["metadata"]["name"] == "sc"
    assert scale["metadata"]["namespace"] == namespace
    assert scale["metadata"]["uid"] == get_job(custom, namespace, "sc")["metadata"]["uid"]
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 2, "selector": "elasticlm.io/job=sc"}

    scale["spec"]["replicas"] = 3
    put = custom.replace_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, LMTJ, "sc", scale
    )
    assert put["spec"]["replicas"] == 3
    job = get_job(custom, namespace, "sc")
    assert job["spec"]["replicas"] == 3
    assert job["metadata"]["generation"] == 2

    patched = custom.patch_namespaced_custom_object_scale(
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "sc",
        {"spec": {"replicas": 1}},
        _content_type="application/merge-patch+json",
    )
    assert patched["spec"]["replicas"] == 1
    assert get_job(custom, namespace, "sc")["spec"]["replicas"] == 1

    stale = dict(put, spec={"replicas": 2})
    status = api_error(
        409,
        custom.replace_namespaced_custom_object_scale,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "sc",
        stale,
    )
    assert status["reason"] == "Conflict"


def test_scale_beyond_the_rules_is_invalid(custom: CustomApi, namespace: str) -> None:
    create_job(custom, namespace, training_job("big"))
    status = api_error(
        422,
        custom.patch_namespaced_custom_object_scale,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        "big",
        {"spec": {"replicas": 5}},
        _content_type="application/merge-patch+json",
    )
    assert "spec.elastic.maxReplicas (3) must be >= spec.replicas (5)" in status["message"]
    assert get_job(custom, namespace, "big")["spec"]["replicas"] == 2


def test_custom_resource_errors(custom: CustomApi, namespace: str) -> None:
    create_job(custom, namespace, training_job("twice"))
    status = api_error(
        409,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        training_job("twice"),
    )
    assert status["reason"] == "AlreadyExists"
    assert status["details"] == {"name": "twice", "group": GROUP, "kind": LMTJ}
    status = api_error(
        404, custom.get_namespaced_custom_object, GROUP, VERSION, namespace, LMTJ, "nope"
    )
    assert status["reason"] == "NotFound"
    assert status["message"] == f'{LMTJ}.{GROUP} "nope" not found'


def test_crd_lifecycle(
    custom: CustomApi,
    extensions: ExtensionsApi,
    scratch_crd: tuple[str, str, dict[str, Any]],
    namespace: str,
) -> None:
    group, plural, crd = scratch_crd
    found = raw(custom.api_client, "GET", f"/apis/{group}/v1").json()
    assert [r["name"] for r in found["resources"]] == [plural]
    created = custom.create_namespaced_custom_object(
        group, "v1", namespace, plural, {"metadata": {"name": "g1"}, "spec": {"size": 3}}
    )
    assert created["kind"] == "Gizmo"
    assert created["apiVersion"] == f"{group}/v1"
    assert created["spec"] == {"size": 3}
    listed = custom.list_cluster_custom_object(group, "v1", plural)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"]

    extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    wait_for(
        lambda: gone(lambda: extensions.read_custom_resource_definition(crd["metadata"]["name"])),
        CONTROLLER_TIMEOUT,
        "the CRD to be deleted",
        retry_on=NOT_YET,
    )
    wait_for(
        lambda: raw(custom.api_client, "GET", f"/apis/{group}/v1/{plural}").status == 404,
        CONTROLLER_TIMEOUT,
        "the custom resources to stop being served",
        retry_on=NOT_YET,
    )


def test_no_op_update_keeps_resource_version(custom: CustomApi, namespace: str) -> None:
    create_job(custom, namespace, training_job("same"))
    current = get_job(custom, namespace, "same")
    again = custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, LMTJ, "same", current
    )
    assert again["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    assert again["metadata"]["generation"] == 1


def test_selectors_on_custom_resources(custom: CustomApi, namespace: str) -> None:
    for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
        body = training_job(name)
        body["metadata"]["labels"] = {"team": team}
        create_job(custom, namespace, body)

    def names(**kw: str) -> list[str]:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, **kw)
        return sorted(i["metadata"]["name"] for i in listed["items"])

    assert names(label_selector="team=x") == ["a", "c"]
    assert names(label_selector="team in (y)") == ["b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector=f"metadata.namespace={namespace}") == ["a", "b", "c"]
    status = api_error(
        400, custom.list_namespaced_custom_object, GROUP, VERSION, namespace, LMTJ,
        field_selector="spec.replicas=2",
    )  # fmt: skip
    assert status["reason"] == "BadRequest"


def test_watch_custom_resources_and_status_writes(custom: CustomApi, namespace: str) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{LMTJ}"
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ)["metadata"][
        "resourceVersion"
    ]
    with WatchStream(custom.api_client, path, resourceVersion=rv, labelSelector="w=1") as w:
        create_job(custom, namespace, training_job("unwatched"))
        body = training_job("watched")
        body["metadata"]["labels"] = {"w": "1"}
        create_job(custom, namespace, body)
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, LMTJ, "watched", {"status": {"step": 3}}
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "watched")
        events = w.until(lambda e: e["type"] == "DELETED")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "watched"),
        ("MODIFIED", "watched"),
        ("DELETED", "watched"),
    ]
    assert events[0]["object"]["kind"] == "LMTrainingJob"
    assert events[1]["object"]["status"] == {"step": 3}
    assert events[0]["object"]["spec"]["autoscaling"]["policy"] == "None"  # defaulted


@pytest.fixture
def cluster_scoped_crd(
    extensions: ExtensionsApi,
) -> Iterator[tuple[str, str]]:
    """A cluster-scoped CRD like kopf's ClusterKopfPeering: (group, plural)."""
    group = f"c{uuid.uuid4().hex[:8]}.conformance.elasticlm.io"
    crd = simple_crd(group, "Peering", "peerings", scope="Cluster")
    install_crds(extensions.api_client, [crd])
    yield group, "peerings"
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])


def test_cluster_scoped_custom_resources(
    custom: CustomApi, cluster_scoped_crd: tuple[str, str]
) -> None:
    group, plural = cluster_scoped_crd
    resources = raw(custom.api_client, "GET", f"/apis/{group}/v1").json()["resources"]
    assert [(r["name"], r["namespaced"]) for r in resources] == [(plural, False)]
    created, code, _ = custom.create_cluster_custom_object_with_http_info(
        group, "v1", plural, {"metadata": {"name": "default"}, "status": {"peer": {"a": 1}}}
    )
    assert code == 201
    assert "namespace" not in created["metadata"]
    assert created["status"] == {"peer": {"a": 1}}  # no status subresource: status is data
    got = custom.get_cluster_custom_object(group, "v1", plural, "default")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    patched = custom.patch_cluster_custom_object(
        group, "v1", plural, "default", {"status": {"peer": None, "other": True}}
    )
    assert patched["status"] == {"other": True}
    listed = custom.list_cluster_custom_object(group, "v1", plural)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["default"]
    assert (
        raw(custom.api_client, "GET", f"/apis/{group}/v1/namespaces/default/{plural}").status == 404
    )
    custom.delete_cluster_custom_object(group, "v1", plural, "default")
    assert gone(lambda: custom.get_cluster_custom_object(group, "v1", plural, "default"))


def test_replace_of_a_missing_custom_resource_is_not_found(
    custom: CustomApi, namespace: str
) -> None:
    body = training_job("absent")
    body["metadata"]["resourceVersion"] = "1"
    status = api_error(
        404, custom.replace_namespaced_custom_object, GROUP, VERSION, namespace, LMTJ, "absent",
        body,
    )  # fmt: skip
    assert status["reason"] == "NotFound"


def test_invalid_crds_are_rejected(extensions: ExtensionsApi) -> None:
    group = f"bad{uuid.uuid4().hex[:6]}.conformance.elasticlm.io"
    names = {"kind": "Bad", "plural": "bads", "singular": "bad"}
    version = {"name": "v1", "served": True, "storage": True}
    no_schema: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"bads.{group}"},
        "spec": {"group": group, "scope": "Namespaced", "names": names, "versions": [version]},
    }
    status = api_error(422, extensions.create_custom_resource_definition, no_schema)
    assert status["reason"] == "Invalid"
    assert any("openAPIV3Schema" in c["field"] for c in status["details"]["causes"]), status
    wrong_name = copy.deepcopy(no_schema)
    wrong_name["metadata"]["name"] = f"others.{group}"
    wrong_name["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": {"type": "object"}}
    status = api_error(422, extensions.create_custom_resource_definition, wrong_name)
    assert "metadata.name" in cause_fields(status)
