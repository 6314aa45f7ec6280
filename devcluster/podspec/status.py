"""A pod's phase, conditions and QoS class, from its containers' states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from devcluster.podspec.common import JSON, rfc3339
from devcluster.values import as_dict, as_list

# --------------------------------------------------------------------------------------
# Pod status


def is_terminated(status: JSON | None) -> bool:
    return bool(status and (status.get("state") or {}).get("terminated") is not None)


def _exit_code(state: JSON | None) -> int | None:
    term = (state or {}).get("terminated")
    if term is None:
        return None
    return int(term.get("exitCode", 0))


def compute_phase(
    restart_policy: str,
    init_names: Sequence[str],
    init_statuses: Mapping[str, JSON],
    names: Sequence[str],
    statuses: Mapping[str, JSON],
    *,
    terminal: bool = False,
) -> str:
    """The pod phase from its container statuses, as the kubelet's getPhase.

    `terminal` says the pod will run nothing more (deleted, or past its deadline): then
    stopped containers make the phase Succeeded or Failed whatever the restartPolicy.
    """
    pending_init = 0
    failed_init = 0
    for name in init_names:
        st = init_statuses.get(name)
        if st is None:
            pending_init += 1
            continue
        state = st.get("state") or {}
        last = st.get("lastState") or {}
        if "running" in state:
            pending_init += 1
        elif "terminated" in state:
            if _exit_code(state) != 0:
                failed_init += 1
        elif "waiting" in state:
            if "terminated" in last:
                if _exit_code(last) != 0:
                    failed_init += 1
            else:
                pending_init += 1
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    any_started = False
    for name in names:
        st = statuses.get(name)
        if st is None:
            unknown += 1
            continue
        state = st.get("state") or {}
        last = st.get("lastState") or {}
        if "running" in state:
            running += 1
            any_started = True
        elif "terminated" in state:
            stopped += 1
            any_started = True
            if _exit_code(state) == 0:
                succeeded += 1
        elif "waiting" in state:
            if "terminated" in last:
                stopped += 1
                any_started = True
            else:
                waiting += 1
        else:
            unknown += 1
    if failed_init > 0 and restart_policy == "Never":
        return "Failed"
    phase = "Pending"
    if (pending_init > 0 and not any_started) or waiting > 0:
        phase = "Pending"
    elif running > 0 and unknown == 0:
        phase = "Running"
    elif running == 0 and stopped > 0 and unknown == 0:
        if terminal or restart_policy in ("Never", "OnFailure"):
            if stopped == succeeded:
                phase = "Succeeded"
            elif terminal or restart_policy == "Never":
                phase = "Failed"
            else:
                phase = "Running"  # OnFailure: restarting the failed ones
        else:
            phase = "Running"  # Always: all restarting
    if terminal and phase not in ("Succeeded", "Failed"):
        # The kubelet never leaves a pod it has finished with in a non-terminal phase.
        return "Failed"
    return phase


CONDITION_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


def pod_conditions(
    *,
    previous: Sequence[JSON],
    sandbox_ready: bool,
    init_names: Sequence[str],
    init_statuses: Mapping[str, JSON],
    names: Sequence[str],
    statuses: Mapping[str, JSON],
    phase: str,
    readiness_gates: Sequence[str] = (),
    now: float,
) -> list[JSON]:
    """PodReadyToStartContainers, Initialized, Ready and ContainersReady (plus whatever
    other conditions the pod already has, such as PodScheduled), each keeping its
    lastTransitionTime while its status does not change."""
    prev = {str(c.get("type")): c for c in previous}
    terminal = phase in ("Succeeded", "Failed")

    incomplete = [
        n for n in init_names if _exit_code((init_statuses.get(n) or {}).get("state")) != 0
    ]
    initialized = not incomplete or phase == "Succeeded"
    unready = [n for n in names if not (statuses.get(n) or {}).get("ready")]
    containers_ready = not unready and not terminal
    gates_ok = all(str((prev.get(g) or {}).get("status")) == "True" for g in readiness_gates)

    desired: dict[str, tuple[bool, str | None, str | None]] = {}
    desired["PodReadyToStartContainers"] = (sandbox_ready and not terminal, None, None)
    desired["Initialized"] = (
        (True, None, None)
        if initialized
        else (
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
    )
    if terminal:
        not_ready: tuple[bool, str | None, str | None] = (False, "PodCompleted", None)
        desired["Ready"] = not_ready
        desired["ContainersReady"] = not_ready
    else:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        desired["ContainersReady"] = (
            (True, None, None) if containers_ready else (False, "ContainersNotReady", msg)
        )
        if not containers_ready:
            desired["Ready"] = (False, "ContainersNotReady", msg)
        elif not gates_ok:
            missing = [
                g for g in readiness_gates if str((prev.get(g) or {}).get("status")) != "True"
            ]
            desired["Ready"] = (
                False,
                "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate {missing[0]!r} is not True",
            )
        else:
            desired["Ready"] = (True, None, None)

    out: list[JSON] = []
    ts = rfc3339(now)
    for ctype in CONDITION_ORDER:
        ok, reason, message = desired[ctype]
        status = "True" if ok else "False"
        old = prev.get(ctype)
        cond: JSON = {"type": ctype, "status": status, "lastProbeTime": None}
        if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
            cond["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = ts
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        out.append(cond)
    managed = set(CONDITION_ORDER)
    others = [c for c in previous if str(c.get("type")) not in managed]
    if not any(c.get("type") == "PodScheduled" for c in others):
        others.insert(
            0,
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
            },
        )
    return out + others


def qos_class(pod: JSON) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' requests and limits."""
    spec = as_dict(pod.get("spec"))
    containers = as_list(spec.get("containers")) + as_list(spec.get("initContainers"))
    requests_any = limits_all = False
    guaranteed = bool(containers)
    for c in containers:
        res = as_dict(as_dict(c).get("resources"))
        req, lim = as_dict(res.get("requests")), as_dict(res.get("limits"))
        if req or lim:
            requests_any = True
        for resource in ("cpu", "memory"):
            differs = resource in req and str(req[resource]) != str(lim.get(resource))
            if resource not in lim or differs:
                guaranteed = False
        limits_all = limits_all or bool(lim)
    if guaranteed and limits_all:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"
