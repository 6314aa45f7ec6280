"""Label selectors (equality and set-based) and field selectors on lists."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conformance.helpers import (
    NOT_YET,
    api_error,
    python_pod,
    wait_default_service_account,
    wait_pod_phase,
)
from tests.kubeclient import CoreApi
from tests.waiting import wait_for

LABELS = {
    "a": {"app": "web", "tier": "front", "env": "prod"},
    "b": {"app": "web", "tier": "back", "env": "dev"},
    "c": {"app": "db", "env": "prod"},
    "d": {"app": "db", "tier": "back", "env": "staging", "canary": "true"},
}


@pytest.fixture
def labelled(core: CoreApi, namespace: str) -> str:
    for name, labels in LABELS.items():
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})
    return namespace


def names(core: CoreApi, namespace: str, **kwargs: str) -> list[str]:
    """The names listed, of the objects this test made (not the cluster's own)."""
    listed = core.list_namespaced_config_map(namespace, **kwargs)
    return sorted(i.metadata.name for i in listed.items if i.metadata.name in LABELS)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("app=web,tier=back", ["b"]),
        ("tier!=back", ["a", "c"]),  # also matches objects without the label
        ("app=nothing", []),
    ],
)
def test_equality_label_selectors(
    core: CoreApi, labelled: str, selector: str, expected: list[str]
) -> None:
    assert names(core, labelled, label_selector=selector) == expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env in (prod,staging)", ["a", "c", "d"]),
        ("env notin (prod)", ["b", "d"]),
        ("tier", ["a", "b", "d"]),
        ("!tier", ["c"]),
        ("canary,app in (db)", ["d"]),
        ("app=db,!canary", ["c"]),
        ("tier notin (front),env in (prod,dev)", ["b", "c"]),
    ],
)
def test_set_based_label_selectors(
    core: CoreApi, labelled: str, selector: str, expected: list[str]
) -> None:
    assert names(core, labelled, label_selector=selector) == expected


def test_field_selectors_on_metadata(core: CoreApi, labelled: str) -> None:
    assert names(core, labelled, field_selector="metadata.name=b") == ["b"]
    assert names(core, labelled, field_selector="metadata.name!=b") == ["a", "c", "d"]
    assert names(core, labelled, field_selector="metadata.namespace=" + labelled) == list("abcd")
    assert names(core, labelled, field_selector="metadata.name=a", label_selector="app=db") == []
    everywhere = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={labelled}", label_selector="env=prod"
    )
    assert sorted(i.metadata.name for i in everywhere.items) == ["a", "c"]
    assert {i.metadata.namespace for i in everywhere.items} == {labelled}


def test_pod_field_selectors(core: CoreApi, namespace: str) -> None:
    wait_default_service_account(core, namespace)
    core.create_namespaced_pod(namespace, python_pod("done", "print('bye')"))
    core.create_namespaced_pod(
        namespace, python_pod("sleeper", "import time; time.sleep(600)", grace=1)
    )
    wait_pod_phase(core, "done", namespace, "Succeeded")
    wait_pod_phase(core, "sleeper", namespace, "Running")
    node = wait_for(
        lambda: core.read_namespaced_pod("done", namespace).spec.node_name,
        10,
        "a node",
        retry_on=NOT_YET,
    )
    on_node = sorted(
        name
        for name in ("done", "sleeper")
        if core.read_namespaced_pod(name, namespace).spec.node_name == node
    )

    def pods(selector: str) -> list[str]:
        listed = core.list_namespaced_pod(namespace, field_selector=selector)
        return sorted(p.metadata.name for p in listed.items)

    assert pods("status.phase=Succeeded") == ["done"]
    assert pods("status.phase=Running") == ["sleeper"]
    assert pods("status.phase!=Running") == ["done"]
    assert pods("status.phase=Failed") == []
    assert pods(f"spec.nodeName={node}") == on_node
    assert pods(f"spec.nodeName=no-such-node-{uuid.uuid4().hex[:6]}") == []
    assert pods(f"status.phase=Succeeded,spec.nodeName={node}") == ["done"]
    everywhere = core.list_pod_for_all_namespaces(
        field_selector=f"metadata.namespace={namespace},status.phase=Succeeded"
    )
    assert [p.metadata.name for p in everywhere.items] == ["done"]


@pytest.mark.parametrize("selector", ["app in (web", "app=web,,", "a b", "!app=web", "x=(y)"])
def test_invalid_label_selectors_are_bad_requests(
    core: CoreApi, namespace: str, selector: str
) -> None:
    status = api_error(400, core.list_namespaced_config_map, namespace, label_selector=selector)
    assert status["reason"] == "BadRequest"


@pytest.mark.parametrize("selector", ["spec.unknown=x", "data.key=1", "metadata.name"])
def test_invalid_field_selectors_are_bad_requests(
    core: CoreApi, namespace: str, selector: str
) -> None:
    status = api_error(400, core.list_namespaced_config_map, namespace, field_selector=selector)
    assert status["reason"] == "BadRequest"
