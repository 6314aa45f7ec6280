"""Scheduling by requests: a pod no node has room for stays Pending, unbound, with
PodScheduled=False/Unschedulable and kube-scheduler's message, and can be deleted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conformance.helpers import gone, python_pod, wait_default_service_account
from tests.kubeclient import CoreApi
from tests.waiting import wait_for


@pytest.fixture(autouse=True)
def _service_account(core: CoreApi, namespace: str) -> None:
    wait_default_service_account(core, namespace)


def test_a_pod_too_large_for_any_node_waits_unschedulable(core: CoreApi, namespace: str) -> None:
    # More CPU than devcluster's default node (1000) or any test cluster's node offers.
    pod = python_pod("huge", "pass", resources={"requests": {"cpu": "100000"}})
    core.create_namespaced_pod(namespace, pod)

    def unschedulable() -> tuple[Any, Any] | None:
        p = core.read_namespaced_pod("huge", namespace)
        for c in p.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False":
                return p, c
        return None

    p, condition = wait_for(unschedulable, 30, "PodScheduled=False on the huge pod")
    assert condition.reason == "Unschedulable"
    assert condition.message.startswith("0/")
    assert "Insufficient cpu" in condition.message
    assert p.status.phase == "Pending"
    assert not p.spec.node_name
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name == "huge" and e.reason == "FailedScheduling"
        ],
        30,
        "a FailedScheduling event",
    )
    assert events[0].type == "Warning"
    core.delete_namespaced_pod("huge", namespace)
    wait_for(lambda: gone(lambda: core.read_namespaced_pod("huge", namespace)), 30, "the pod gone")
