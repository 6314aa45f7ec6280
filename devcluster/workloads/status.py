"""A Deployment's status and conditions (pure), after calculateStatus (sync.go),
syncRolloutStatus and requeueStuckDeployment (progress.go) and checkPausedConditions.

- Available: True (MinimumReplicasAvailable) while at least replicas - maxUnavailable
  pods are available, else False (MinimumReplicasUnavailable).
- Progressing, only with a progress deadline: True NewReplicaSetCreated or
  FoundNewReplicaSet when a rollout starts, True ReplicaSetUpdated whenever it
  progresses (new pods updated, old pods gone, pods ready or available; lastUpdateTime
  moves), True NewReplicaSetAvailable once complete, False ProgressDeadlineExceeded when
  nothing progressed for progressDeadlineSeconds, Unknown DeploymentPaused or
  DeploymentResumed on pause and resume.
- A condition that keeps its status and reason is left as it is; one that keeps its
  status keeps its lastTransitionTime.

Integer fields are omitted when 0, as the API's `omitempty` does.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from devcluster.store import Obj, rfc3339
from devcluster.values import as_dict, as_list
from devcluster.workloads.pods import timestamp
from devcluster.workloads.rollout import ReplicaSetState, RolloutStrategy, max_unavailable

AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
RS_UPDATED = "ReplicaSetUpdated"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
NO_DEADLINE = 2**31 - 1  # progressDeadlineSeconds meaning "never time out"
#: The shortest wait before a progress check (requeueStuckDeployment rate-limits those).
MIN_PROGRESS_CHECK = 0.2


def stamp(now: float) -> str:
    return rfc3339(datetime.fromtimestamp(now, UTC))


def new_condition(kind: str, status: str, reason: str, message: str, now: float) -> Obj:
    moment = stamp(now)
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": moment,
        "lastTransitionTime": moment,
        "reason": reason,
        "message": message,
    }


def get_condition(status: Obj, kind: str) -> Obj | None:
    for condition in map(as_dict, as_list(status.get("conditions"))):
        if condition.get("type") == kind:
            return condition
    return None


def remove_condition(status: Obj, kind: str) -> None:
    kept = [c for c in as_list(status.get("conditions")) if as_dict(c).get("type") != kind]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def set_condition(status: Obj, condition: Obj) -> None:
    """SetDeploymentCondition: the same status and reason change nothing."""
    current = get_condition(status, condition["type"])
    if current is not None and (current.get("status"), current.get("reason")) == (
        condition["status"],
        condition["reason"],
    ):
        return
    if current is not None and current.get("status") == condition["status"]:
        condition = {**condition, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def _spec(deployment: Obj) -> Obj:
    return as_dict(deployment.get("spec"))


def desired_replicas(deployment: Obj) -> int:
    return int(_spec(deployment).get("replicas", 1) or 0)


def progress_deadline(deployment: Obj) -> int | None:
    deadline = _spec(deployment).get("progressDeadlineSeconds")
    if not isinstance(deadline, int) or deadline == NO_DEADLINE:
        return None
    return deadline


def calculate_status(
    deployment: Obj, all_sets: list[ReplicaSetState], new: ReplicaSetState | None, now: float
) -> Obj:
    """Counts over the ReplicaSets, the old conditions, and Available."""
    desired = desired_replicas(deployment)
    old = as_dict(deployment.get("status"))
    available = sum(rs.available for rs in all_sets)
    counts = {
        "replicas": sum(rs.current for rs in all_sets),
        "updatedReplicas": new.current if new is not None else 0,
        "readyReplicas": sum(rs.ready for rs in all_sets),
        "availableReplicas": available,
        "unavailableReplicas": max(0, sum(rs.replicas for rs in all_sets) - available),
        "collisionCount": int(old.get("collisionCount") or 0),
    }
    status: Obj = {"observedGeneration": int(deployment["metadata"].get("generation") or 1)}
    status.update({key: value for key, value in counts.items() if value})
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    floor = desired - max_unavailable(RolloutStrategy.of(deployment), desired)
    if available >= floor:
        set_condition(
            status,
            new_condition(
                AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now
            ),
        )
    else:
        set_condition(
            status,
            new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        )
    return status


def deployment_complete(deployment: Obj, status: Obj) -> bool:
    desired = desired_replicas(deployment)
    counts = [status.get(k, 0) for k in ("updatedReplicas", "replicas", "availableReplicas")]
    generation = int(deployment["metadata"].get("generation") or 1)
    return counts == [desired] * 3 and int(status.get("observedGeneration", 0)) >= generation


def _progressing(old: Obj, new: Obj) -> bool:
    """DeploymentProgressing: anything moved the rollout forward since the last status."""

    def count(status: Obj, key: str) -> int:
        return int(status.get(key) or 0)

    old_olds = count(old, "replicas") - count(old, "updatedReplicas")
    new_olds = count(new, "replicas") - count(new, "updatedReplicas")
    return (
        count(new, "updatedReplicas") > count(old, "updatedReplicas")
        or new_olds < old_olds
        or count(new, "readyReplicas") > count(old, "readyReplicas")
        or count(new, "availableReplicas") > count(old, "availableReplicas")
    )


def _timed_out(deployment: Obj, status: Obj, now: float) -> bool:
    deadline = progress_deadline(deployment)
    condition = get_condition(status, PROGRESSING)
    if deadline is None or condition is None:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    since = timestamp(condition.get("lastUpdateTime"))
    return since is not None and since + deadline < now


def rollout_status(
    deployment: Obj, all_sets: list[ReplicaSetState], new: ReplicaSetState | None, now: float
) -> Obj:
    """The status after a rollout pass, with the progress estimate (syncRolloutStatus)."""
    status = calculate_status(deployment, all_sets, new, now)
    old = as_dict(deployment.get("status"))
    name = deployment["metadata"]["name"]
    subject = f'ReplicaSet "{new.name}"' if new is not None else f'Deployment "{name}"'
    if progress_deadline(deployment) is None:
        remove_condition(status, PROGRESSING)
        return status
    current = get_condition(old, PROGRESSING)
    settled = (
        status.get("replicas", 0) == status.get("updatedReplicas", 0)
        and current is not None
        and current.get("reason") == NEW_RS_AVAILABLE
    )
    if settled:
        return status
    if deployment_complete(deployment, status):
        message = f"{subject} has successfully progressed."
        set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now))
    elif _progressing(old, status):
        # Progress moves lastUpdateTime even when status and reason stay.
        condition = new_condition(
            PROGRESSING, "True", RS_UPDATED, f"{subject} is progressing.", now
        )
        if current is not None and current.get("status") == "True":
            condition["lastTransitionTime"] = current.get("lastTransitionTime")
        remove_condition(status, PROGRESSING)
        set_condition(status, condition)
    elif _timed_out(deployment, status, now):
        message = f"{subject} has timed out progressing."
        set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT, message, now))
    return status


def progress_check_in(deployment: Obj, status: Obj, now: float) -> float | None:
    """Seconds until the progress deadline must be checked (requeueStuckDeployment)."""
    deadline = progress_deadline(deployment)
    current = get_condition(as_dict(deployment.get("status")), PROGRESSING)
    if deadline is None or current is None:
        return None
    if deployment_complete(deployment, status) or current.get("reason") == TIMED_OUT:
        return None
    since = timestamp(current.get("lastUpdateTime"))
    if since is None:
        return None
    # +1 s: condition times have whole seconds, and the deadline is passed strictly.
    return max(MIN_PROGRESS_CHECK, since + deadline - now + 1.0)


def paused_condition(deployment: Obj, now: float) -> Obj | None:
    """The Progressing condition pausing or resuming sets, if any (checkPausedConditions)."""
    if progress_deadline(deployment) is None:
        return None
    current = get_condition(as_dict(deployment.get("status")), PROGRESSING)
    if current is not None and current.get("reason") == TIMED_OUT:
        return None
    paused_now = current is not None and current.get("reason") == PAUSED
    if _spec(deployment).get("paused") and not paused_now:
        return new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now)
    if not _spec(deployment).get("paused") and paused_now:
        return new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now)
    return None
