"""A Deployment's status and conditions, and the pod-template-hash and revision
bookkeeping of its ReplicaSets."""

from __future__ import annotations

from typing import Any

from devcluster.workloads.rollout import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    ReplicaSetState,
)
from devcluster.workloads.status import (
    AVAILABLE,
    PROGRESSING,
    calculate_status,
    get_condition,
    new_condition,
    paused_condition,
    progress_check_in,
    rollout_status,
    set_condition,
    stamp,
)
from devcluster.workloads.templates import (
    POD_TEMPLATE_HASH,
    equal_ignore_hash,
    new_replica_set,
    pod_from_template,
    set_new_annotations,
    template_hash,
)

T0 = 1_700_000_000.0


def deployment(replicas: int = 3, generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": generation},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "progressDeadlineSeconds": 60,
            "revisionHistoryLimit": 10,
        },
        "status": status,
    }


def rs(name: str, replicas: int, available: int) -> ReplicaSetState:
    return ReplicaSetState(name, replicas, current=replicas, ready=available, available=available)


def reason(status: dict[str, Any], kind: str) -> tuple[str, str] | None:
    condition = get_condition(status, kind)
    return None if condition is None else (condition["status"], condition["reason"])


def test_counts_and_availability() -> None:
    d = deployment(3)
    new, old = rs("new", 2, 1), rs("old", 2, 2)
    status = calculate_status(d, [old, new], new, T0)
    assert status["replicas"] == 4
    assert status["updatedReplicas"] == 2
    assert status["availableReplicas"] == 3
    assert status["unavailableReplicas"] == 1
    assert status["observedGeneration"] == 1
    assert reason(status, AVAILABLE) == ("True", "MinimumReplicasAvailable")
    short = calculate_status(d, [rs("new", 3, 2)], None, T0)
    assert reason(short, AVAILABLE) == ("False", "MinimumReplicasUnavailable")
    assert "updatedReplicas" not in short  # zeros are omitted, as omitempty does


def test_set_condition_keeps_what_did_not_change() -> None:
    status: dict[str, Any] = {}
    set_condition(status, new_condition(PROGRESSING, "True", "A", "first", T0))
    set_condition(status, new_condition(PROGRESSING, "True", "A", "second", T0 + 5))
    assert get_condition(status, PROGRESSING)["message"] == "first"  # type: ignore[index]
    set_condition(status, new_condition(PROGRESSING, "True", "B", "third", T0 + 9))
    condition = get_condition(status, PROGRESSING)
    assert condition is not None
    assert condition["lastTransitionTime"] == stamp(T0)  # the same status: kept
    assert condition["lastUpdateTime"] == stamp(T0 + 9)


def test_progress_then_completion_then_timeout() -> None:
    created = new_condition(PROGRESSING, "True", "NewReplicaSetCreated", "created", T0)
    d = deployment(2, conditions=[created])
    new = rs("web-1", 1, 0)
    status = rollout_status(d, [new], new, T0 + 1)
    assert reason(status, PROGRESSING) == ("True", "ReplicaSetUpdated")
    assert get_condition(status, PROGRESSING)["message"] == 'ReplicaSet "web-1" is progressing.'  # type: ignore[index]
    # nothing moves: no new condition, and a progress check is due at the deadline
    d["status"] = status
    same = rollout_status(d, [new], new, T0 + 30)
    assert same == status
    assert 30 <= (progress_check_in(d, same, T0 + 30) or 0) <= 32
    timed_out = rollout_status(d, [new], new, T0 + 62)
    assert reason(timed_out, PROGRESSING) == ("False", "ProgressDeadlineExceeded")
    d["status"] = timed_out
    assert progress_check_in(d, timed_out, T0 + 62) is None
    done = rs("web-1", 2, 2)
    complete = rollout_status(d, [done], done, T0 + 70)
    assert reason(complete, PROGRESSING) == ("True", "NewReplicaSetAvailable")


def test_no_progress_condition_without_a_deadline() -> None:
    d = deployment(1)
    d["spec"]["progressDeadlineSeconds"] = 2**31 - 1
    new = rs("web-1", 1, 1)
    assert get_condition(rollout_status(d, [new], new, T0), PROGRESSING) is None


def test_pause_and_resume_conditions() -> None:
    d = deployment(1)
    d["spec"]["paused"] = True
    paused = paused_condition(d, T0)
    assert paused is not None
    assert (paused["status"], paused["reason"]) == (
        "Unknown",
        "DeploymentPaused",
    )
    d["status"] = {"conditions": [paused]}
    assert paused_condition(d, T0) is None
    d["spec"]["paused"] = False
    resumed = paused_condition(d, T0)
    assert resumed is not None
    assert resumed["reason"] == "DeploymentResumed"


# --------------------------------------------------------------------------- templates


def test_template_hash_follows_the_template_and_the_collision_count() -> None:
    template = deployment()["spec"]["template"]
    first = template_hash(template)
    assert first == template_hash(dict(template))
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert template_hash(template, 1) != first
    changed = {**template, "spec": {"containers": [{"name": "x", "image": "y"}]}}
    assert template_hash(changed) != first


def test_new_replica_set_of_a_deployment() -> None:
    d = deployment(3)
    made = new_replica_set(d, 2, 0)
    pod_hash = made["spec"]["template"]["metadata"]["labels"][POD_TEMPLATE_HASH]
    assert made["metadata"]["name"] == f"web-{pod_hash}"
    assert made["spec"]["selector"]["matchLabels"] == {"app": "web", POD_TEMPLATE_HASH: pod_hash}
    assert made["metadata"]["labels"] == {"app": "web", POD_TEMPLATE_HASH: pod_hash}
    owner = made["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "Deployment", "d-uid", True, True,
    )  # fmt: skip
    assert equal_ignore_hash(made["spec"]["template"], d["spec"]["template"])
    made["metadata"]["uid"] = "rs-uid"
    pod = pod_from_template(made)
    assert pod["metadata"]["generateName"] == f"web-{pod_hash}-"
    assert pod["metadata"]["labels"][POD_TEMPLATE_HASH] == pod_hash
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "rs-uid"


def test_revision_annotations_and_rollback_history() -> None:
    d = deployment(3)
    d["metadata"]["annotations"] = {
        "kubernetes.io/change-cause": "v2",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        REVISION: "7",
    }
    fresh: dict[str, str] = {}
    assert set_new_annotations(d, fresh, 3, False, 3, 4)
    assert fresh == {
        "kubernetes.io/change-cause": "v2",
        REVISION: "3",
        DESIRED_REPLICAS: "3",
        MAX_REPLICAS: "4",
    }
    assert not set_new_annotations(d, fresh, 3, True, 3, 4)
    # the ReplicaSet of revision 3 comes back as revision 5: 3 goes to the history
    assert set_new_annotations(d, fresh, 5, True, 3, 4)
    assert (fresh[REVISION], fresh[REVISION_HISTORY]) == ("5", "3")
    set_new_annotations(d, fresh, 8, True, 3, 4)
    assert fresh[REVISION_HISTORY] == "3,5"
