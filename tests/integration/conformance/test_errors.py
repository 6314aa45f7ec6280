"""Bad input gets the right `Status` error, and the server stays up after each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.integration.conformance.helpers import (
    GROUP,
    LMTJ,
    VERSION,
    RawResponse,
    api_error,
    raw,
    training_job,
)
from tests.kubeclient import CoreApi, CustomApi

LIMIT = 3 * 1024 * 1024  # the API server's request body limit


@pytest.fixture(autouse=True)
def _server_stays_up(api: kubernetes.client.ApiClient) -> Iterator[None]:
    yield
    assert raw(api, "GET", "/version").status == 200, "the API server stopped answering"
    assert raw(api, "GET", "/api/v1/namespaces").status == 200


def failure(response: RawResponse, code: int, reason: str) -> dict[str, Any]:
    assert response.status == code, response
    status: dict[str, Any] = response.json()
    assert status["kind"] == "Status", status
    assert status["apiVersion"] == "v1", status
    assert status["status"] == "Failure", status
    assert status["code"] == code, status
    assert status["reason"] == reason, status
    assert status["message"], status
    return status


def cm_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")


@pytest.mark.parametrize(
    "body",
    [
        b'{"metadata": {"name": "x"}',  # truncated
        b"{'metadata': {}}",  # not JSON
        b"\xff\xfe\x00garbage",
        b"",
    ],
    ids=["truncated", "single-quotes", "binary", "empty"],
)
def test_malformed_json_is_bad_request(
    api: kubernetes.client.ApiClient, namespace: str, body: bytes
) -> None:
    failure(
        raw(api, "POST", cm_path(namespace), body=body, content_type="application/json"),
        400,
        "BadRequest",
    )


def test_json_that_is_not_an_object_is_bad_request(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    for body in (b"[1, 2]", b'"text"', b"42"):
        response = raw(api, "POST", cm_path(namespace), body=body, content_type="application/json")
        failure(response, 400, "BadRequest")


def test_malformed_bodies_of_updates_and_patches(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    path = cm_path(namespace, "c")
    broken = b'{"data": {'
    failure(raw(api, "PUT", path, body=broken, content_type="application/json"), 400, "BadRequest")
    for content_type in ("application/merge-patch+json", "application/json-patch+json",
                         "application/strategic-merge-patch+json"):  # fmt: skip
        failure(raw(api, "PATCH", path, body=broken, content_type=content_type), 400, "BadRequest")
    # a JSON patch must be a list of operations
    response = raw(
        api, "PATCH", path, body=b'{"op": "add"}', content_type="application/json-patch+json"
    )
    failure(response, 400, "BadRequest")


def test_yaml_bodies(api: kubernetes.client.ApiClient, namespace: str) -> None:
    good = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
    created = raw(api, "POST", cm_path(namespace), body=good, content_type="application/yaml")
    assert created.status == 201, created
    assert created.json()["data"] == {"a": "b"}
    bad = b"metadata:\n  name: [unclosed\n  - : :\n"
    response = raw(api, "POST", cm_path(namespace), body=bad, content_type="application/yaml")
    failure(response, 400, "BadRequest")


def test_unsupported_media_type(api: kubernetes.client.ApiClient, namespace: str) -> None:
    response = raw(api, "POST", cm_path(namespace), body=b"metadata=x", content_type="text/plain")
    failure(response, 415, "UnsupportedMediaType")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/widgets",
        "/api/v1/widgets",
        "/apis/nope.example.com/v1/things",
        "/apis/elasticlm.io/v9/lmtrainingjobs",
        "/api/v9/pods",
        "/no/such/path",
    ],
)
def test_unknown_resources_are_not_found(api: kubernetes.client.ApiClient, path: str) -> None:
    failure(raw(api, "GET", path), 404, "NotFound")


def test_unknown_resource_with_a_body_is_not_found(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    response = raw(
        api, "POST", f"/api/v1/namespaces/{namespace}/widgets", body={"metadata": {"name": "w"}}
    )
    failure(response, 404, "NotFound")


def test_method_not_allowed(api: kubernetes.client.ApiClient, namespace: str) -> None:
    response = raw(api, "POST", cm_path(namespace, "named"), body={"metadata": {"name": "named"}})
    failure(response, 405, "MethodNotAllowed")


def test_oversized_bodies(api: kubernetes.client.ApiClient, core: CoreApi, namespace: str) -> None:
    huge = b'{"metadata": {"name": "huge"}, "data": {"blob": "' + b"x" * (LIMIT + 1024) + b'"}}'
    failure(
        raw(api, "POST", cm_path(namespace), body=huge, content_type="application/json"),
        413,
        "RequestEntityTooLarge",
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "small"}})
    patch = b'{"data": {"blob": "' + b"y" * (LIMIT + 1024) + b'"}}'
    failure(
        raw(
            api,
            "PATCH",
            cm_path(namespace, "small"),
            body=patch,
            content_type="application/merge-patch+json",
        ),
        413,
        "RequestEntityTooLarge",
    )
    # below the limit is fine (a ConfigMap holds up to 1 MiB)
    big = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "big"}, "data": {"blob": "z" * 900_000}}
    )
    assert len(big.data["blob"]) == 900_000


def test_deeply_nested_json(api: kubernetes.client.ApiClient, namespace: str) -> None:
    depth = 100_000
    body = b'{"metadata": {"name": "deep"}, "data": ' + b"[" * depth + b"]" * depth + b"}"
    response = raw(api, "POST", cm_path(namespace), body=body, content_type="application/json")
    assert 400 <= response.status < 500, response
    assert response.json()["kind"] == "Status"


def test_schema_failures_are_invalid_with_causes(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    body = training_job("bad", replicas="many")
    body["spec"]["training"]["precision"] = "fp4"
    del body["spec"]["data"]["path"]
    status = api_error(
        422, custom.create_namespaced_custom_object, GROUP, VERSION, namespace, LMTJ, body
    )
    assert status["reason"] == "Invalid"
    causes = {c["field"]: c["reason"] for c in status["details"]["causes"]}
    assert causes["spec.replicas"] == "FieldValueTypeInvalid"
    assert causes["spec.training.precision"] == "FieldValueNotSupported"
    assert causes["spec.data.path"] == "FieldValueRequired"


def test_invalid_selectors(api: kubernetes.client.ApiClient, namespace: str) -> None:
    for query in (
        {"labelSelector": "a in (b"},
        {"labelSelector": "=value"},
        {"fieldSelector": "spec.nothing=1"},
        {"fieldSelector": "status.phase=Running"},  # a pod field, not a configmap one
    ):
        failure(raw(api, "GET", cm_path(namespace), query=query), 400, "BadRequest")
        failure(
            raw(api, "GET", cm_path(namespace), query={**query, "watch": "1", "timeoutSeconds": 1}),
            400,
            "BadRequest",
        )
    failure(
        raw(api, "GET", f"/api/v1/namespaces/{namespace}/pods", query={"fieldSelector": "x=y"}),
        400,
        "BadRequest",
    )


def test_missing_name_is_invalid(api: kubernetes.client.ApiClient, namespace: str) -> None:
    response = raw(api, "POST", cm_path(namespace), body={"data": {"a": "b"}})
    status = failure(response, 422, "Invalid")
    assert "metadata.name" in [c["field"] for c in status["details"]["causes"]]


def test_wrong_types_in_core_objects_are_bad_requests(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    response = raw(
        api, "POST", cm_path(namespace), body={"metadata": {"name": "t"}, "data": {"a": 1}}
    )
    failure(response, 400, "BadRequest")


def test_core_objects_are_validated(
    api: kubernetes.client.ApiClient, core: CoreApi, namespace: str
) -> None:
    response = raw(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        body={"metadata": {"name": "p"}, "spec": {}},
    )  # the client itself refuses a pod without containers: raw
    status = failure(response, 422, "Invalid")
    assert "spec.containers" in [c["field"] for c in status["details"]["causes"]]
    assert status["details"]["kind"] == "Pod"
    status = api_error(
        422,
        core.create_namespaced_service,
        namespace,
        {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}},
    )
    assert "spec.ports[0].port" in [c["field"] for c in status["details"]["causes"]]
    status = api_error(
        422,
        core.create_namespaced_config_map,
        namespace,
        {"metadata": {"name": "c", "labels": {"bad key!": "v"}}},
    )
    assert any(c["field"].startswith("metadata.labels") for c in status["details"]["causes"])


def test_secret_data_must_be_base64(api: kubernetes.client.ApiClient, namespace: str) -> None:
    response = raw(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={"metadata": {"name": "s"}, "data": {"k": "not base64!"}},
    )
    failure(response, 400, "BadRequest")


def test_custom_resource_names_are_validated(
    custom: CustomApi, namespace: str, elasticlm_crds: list[str]
) -> None:
    status = api_error(
        422,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        training_job("Not_Valid"),
    )
    assert "metadata.name" in [c["field"] for c in status["details"]["causes"]]
