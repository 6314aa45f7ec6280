"""The LMTrainingJob reconciler: a pure function from what is to what should be done.

Level-based: the input is the job, its last status, the children that exist now and the
latest metrics of rank 0; the output is a Plan (ordered actions, the new status and the
events to post). Running it twice on the same input gives the same plan, and a
restarted operator converges from whatever it finds: names are deterministic, a pod that
still exists (even terminating) is never created again, and a failed pod's uid is
recorded in status when its restart is counted, so no failure is counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from lmoperator.api import InvalidResourceError
from lmoperator.api.common import MAX_SCALING_HISTORY
from lmoperator.api.trainingjob import (
    MAX_COUNTED_FAILURES,
    CleanPodPolicy,
    LMTrainingJob,
    RestartPolicy,
    TrainingConditionType,
    TrainingPhase,
)
from lmoperator.builders.trainingjob import (
    INDEX_LABEL,
    ROLE_LABEL,
    ROLE_RDZV,
    ROLE_WORKER,
    WORKER_CONTAINER,
    InvalidPodError,
    rdzv_name,
    rdzv_pod,
    rdzv_service,
    validate_worker_pod,
    worker_name,
    worker_pod,
    worker_selector,
)
from lmoperator.metrics_client import WorkerMetrics
from lmoperator.reconcile.conditions import Conditions, parse_time, rfc3339
from lmworker.config import EXIT_PERMANENT, RDZV_PORT

Cond = TrainingConditionType
Phase = TrainingPhase
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})

# Reasons (CamelCase, as conditions and Events want them).
REASON_INVALID = "Invalid"
REASON_WORKER_FAILED = "WorkerFailed"
REASON_BACKOFF = "BackoffLimitExceeded"
REASON_DEADLINE = "DeadlineExceeded"
REASON_COMPLETED = "TrainingCompleted"
MAX_MESSAGE = 1024


# --------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class JobRef:
    """Who the job is, known even when its spec does not parse."""

    name: str
    namespace: str
    uid: str
    generation: int = 0


@dataclass(frozen=True)
class ObservedPod:
    name: str
    uid: str
    role: str
    index: int | None
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = False
    deleting: bool = False
    exit_code: int | None = None
    termination_message: str | None = None
    restart_count: int = 0
    ip: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class ObservedService:
    name: str
    cluster_ip: str | None


@dataclass(frozen=True)
class Observed:
    pods: Sequence[ObservedPod] = ()
    services: Sequence[ObservedService] = ()
    metrics: WorkerMetrics | None = None


def observe_pod(pod: Mapping[str, Any]) -> ObservedPod:
    """The facts the reconciler needs from a pod manifest (as the API returns it)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    try:
        index: int | None = int(labels[INDEX_LABEL])
    except (KeyError, TypeError, ValueError):
        index = None
    statuses = [s for s in status.get("containerStatuses") or [] if isinstance(s, Mapping)]
    main = next((s for s in statuses if s.get("name") == WORKER_CONTAINER), None)
    main = main or (statuses[0] if statuses else {})
    terminated = (main.get("state") or {}).get("terminated") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    )
    exit_code = terminated.get("exitCode")
    return ObservedPod(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        role=str(labels.get(ROLE_LABEL, "")),
        index=index,
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        termination_message=terminated.get("message"),
        restart_count=int(main.get("restartCount") or 0),
        ip=status.get("podIP") or None,
    )


def observe_service(service: Mapping[str, Any]) -> ObservedService:
    ip = (service.get("spec") or {}).get("clusterIP")
    return ObservedService(
        name=str((service.get("metadata") or {}).get("name", "")),
        cluster_ip=ip if ip and ip != "None" else None,
    )


# --------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True)
class CreateService:
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class CreatePod:
    manifest: dict[str, Any]
    role: str

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class DeletePod:
    name: str
    role: str
    reason: str
    # None: the pod's own terminationGracePeriodSeconds (the worker saves a checkpoint).
    grace_seconds: int | None = None


@dataclass(frozen=True)
class DeleteJob:
    reason: str


Action = CreateService | CreatePod | DeletePod | DeleteJob


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # "up" or "down" when this pass decided a rescale.
    scaled: Literal["up", "down"] | None = None


# --------------------------------------------------------------------------------------
# Decisions


def _completed_step(message: str | None) -> int | None:
    """The step of a worker's completion report ({"completed": true, "step": N})."""
    if not message:
        return None
    try:
        report = json.loads(message)
    except ValueError:
        return None
    if isinstance(report, dict) and report.get("completed") is True:
        step = report.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    return None


def is_permanent_failure(policy: RestartPolicy, exit_code: int | None) -> bool:
    """Whether a failed worker must fail the job rather than be replaced.

    Exit code 3 (EXIT_PERMANENT) always is: the worker said restarting cannot help.
    ExitCode follows Kubeflow: 1-127 are the program's own errors (permanent), 128 and
    above are signals (137 OOM-kill or SIGKILL, 143 SIGTERM: retryable). A pod that
    failed without an exit code (evicted, lost node) is retryable.
    """
    if exit_code == EXIT_PERMANENT:
        return True
    if policy == RestartPolicy.NEVER:
        return True
    if policy == RestartPolicy.EXIT_CODE:
        return exit_code is not None and 1 <= exit_code <= 127
    return False


def _failure_text(pod: ObservedPod) -> str:
    code = f"exit code {pod.exit_code}" if pod.exit_code is not None else "no exit code"
    detail = (pod.termination_message or "").strip()
    if len(detail) > 400:
        detail = "..." + detail[-397:]
    return f"{pod.name} failed ({code})" + (f": {detail}" if detail else "")


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


class _Pass:
    """One reconciliation pass: accumulates the plan."""

    def __init__(
        self, ref: JobRef, status: Mapping[str, Any], observed: Observed, now: datetime
    ) -> None:
        self.ref = ref
        self.old = dict(status)
        self.now = now
        self.observed = observed
        self.plan = Plan()
        self.status: dict[str, Any] = dict(status)
        self.conditions = Conditions(status.get("conditions"), now, ref.generation)
        self.pods = {p.name: p for p in observed.pods}
        self.workers = sorted(
            (p for p in observed.pods if p.role == ROLE_WORKER and p.index is not None),
            key=lambda p: p.index or 0,
        )

    # -- helpers ----------------------------------------------------------------------

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.events.append(Event(reason, _clip(message), "Warning" if warning else "Normal"))

    def delete(self, pod: ObservedPod, reason: str, grace: int | None = None) -> None:
        if not pod.deleting and not any(
            isinstance(a, DeletePod) and a.name == pod.name for a in self.plan.actions
        ):
            self.plan.actions.append(DeletePod(pod.name, pod.role, reason, grace))

    def observe(self) -> None:
        """Status fields that only report what exists."""
        live = [p for p in self.workers if not p.deleting]
        self.status["observedGeneration"] = self.ref.generation
        self.status["selector"] = worker_selector(self.ref.name)
        self.status["replicas"] = len(live)
        self.status["readyReplicas"] = sum(1 for p in live if p.ready)
        metrics = self.observed.metrics
        if metrics is not None:
            for key, value in (
                ("step", metrics.step),
                ("loss", metrics.loss),
                ("tokensPerSecond", metrics.tokens_per_second),
                ("worldSize", metrics.world_size),
            ):
                if value is not None:
                    self.status[key] = max(value, 0.0) if key == "tokensPerSecond" else value
            if (
                metrics.last_checkpoint_step is not None
                and metrics.last_checkpoint_time is not None
                and metrics.last_checkpoint_time > 0
            ):
                self.status["lastCheckpoint"] = {
                    "step": metrics.last_checkpoint_step,
                    "time": rfc3339(datetime.fromtimestamp(metrics.last_checkpoint_time, UTC)),
                }
        elif not any(p.ready for p in live):
            self.status["worldSize"] = 0
            self.status.pop("tokensPerSecond", None)

    def finish(self) -> Plan:
        self.status["conditions"] = self.conditions.to_list()
        self.plan.status = {k: v for k, v in self.status.items() if v is not None}
        return self.plan

    # -- terminal states ----------------------------------------------------------------

    def end(self, succeeded: bool, reason: str, message: str) -> None:
        """Move to Succeeded or Failed (once)."""
        phase = Phase.SUCCEEDED if succeeded else Phase.FAILED
        self.status["phase"] = phase.value
        self.status.setdefault("completionTime", rfc3339(self.now))
        if self.conditions.set(phase.value, True, reason, message):
            self.event(reason, message, warning=not succeeded)
        for type_ in (Cond.RUNNING, Cond.SCALING, Cond.RESTARTING):
            self.conditions.clear(type_, reason, "The job has finished.")

    def clean_up(self, job: LMTrainingJob | None) -> None:
        """What a finished job does on every pass: clean pods, maybe delete itself."""
        policy = job.spec.run_policy.clean_pod_policy if job else CleanPodPolicy.RUNNING
        deadline = self.conditions.reason(Cond.FAILED) == REASON_DEADLINE
        for pod in self.observed.pods:
            if policy == CleanPodPolicy.ALL:
                self.delete(pod, "CleanPodPolicyAll")
            elif (policy == CleanPodPolicy.RUNNING or deadline) and not pod.finished:
                self.delete(pod, REASON_DEADLINE if deadline else "CleanPodPolicyRunning")
        ttl = job.spec.run_policy.ttl_seconds_after_finished if job else None
        completed = parse_time(self.status.get("completionTime"))
        if (
            ttl is not None
            and completed is not None
            and self.now >= completed + timedelta(seconds=ttl)
        ):
            self.plan.actions.append(DeleteJob(f"ttlSecondsAfterFinished ({ttl} s) passed"))

    # -- the running job ----------------------------------------------------------------

    def record_rescale(self, job: LMTrainingJob) -> None:
        replicas = job.spec.replicas
        previous = self.status.get("targetReplicas")
        self.status["targetReplicas"] = replicas
        if not isinstance(previous, int) or previous == replicas:
            return
        up = replicas > previous
        self.plan.scaled = "up" if up else "down"
        reason = f"Manual: spec.replicas {previous} → {replicas}"
        decision: dict[str, Any] = {
            "time": rfc3339(self.now),
            "from": previous,
            "to": replicas,
            "reason": reason,
        }
        metrics = self.observed.metrics
        if metrics is not None:
            figures = {
                "tokensPerSecond": metrics.tokens_per_second,
                "worldSize": metrics.world_size,
                "step": metrics.step,
            }
            decision["metrics"] = {k: float(v) for k, v in figures.items() if v is not None}
        history = [*(self.status.get("scalingHistory") or []), decision]
        self.status["scalingHistory"] = history[-MAX_SCALING_HISTORY:]
        direction = "ScalingUp" if up else "ScalingDown"
        self.conditions.set(Cond.SCALING, True, direction, f"{previous} → {replicas} workers")
        self.event(direction, f"Scaling from {previous} to {replicas} workers ({reason})")

    def suspend(self) -> None:
        for pod in self.observed.pods:
            self.delete(pod, "Suspended")
        self.status["phase"] = Phase.SUSPENDED.value
        if self.conditions.set(
            Cond.SUSPENDED, True, "Suspended", "spec.runPolicy.suspend is true; pods removed."
        ):
            self.event("Suspended", "Suspended the job: removing its pods")
        self.conditions.clear(Cond.RUNNING, "Suspended", "The job is suspended.")
        self.conditions.clear(Cond.SCALING, "Suspended", "The job is suspended.")
        self.conditions.clear(Cond.RESTARTING, "Suspended", "The job is suspended.")

    def success(self, job: LMTrainingJob) -> str | None:
        """Why training is complete, or None."""
        steps = job.spec.training.steps
        for pod in self.workers:
            # The report is the truth, whatever the exit code: a worker writes it only
            # once training reached its steps (and may be killed while exiting).
            step = _completed_step(pod.termination_message) if pod.finished else None
            if step is not None and step >= steps:
                self.status["step"] = max(step, int(self.status.get("step") or 0))
                return f"{pod.name} reported training complete at step {step} of {steps}"
        known = [self.status.get("step"), self.observed.metrics and self.observed.metrics.step]
        step = max((s for s in known if isinstance(s, int)), default=0)
        members = [p for p in self.workers if (p.index or 0) < job.spec.replicas]
        if members and step >= steps and all(p.phase == "Succeeded" for p in members):
            return f"All workers exited after step {step} of {steps}"
        return None

    def handle_failures(self, job: LMTrainingJob) -> tuple[bool, str | None]:
        """Replace failed workers; (a replacement is under way, why the job fails)."""
        policy = job.spec.run_policy
        counted: list[str] = list(self.status.get("countedFailures") or [])
        restarts = int(self.status.get("restarts") or 0)
        replacing = False
        for pod in self.workers:
            if pod.deleting or (pod.index or 0) >= job.spec.replicas:
                continue
            if pod.phase == "Succeeded":
                # Left the group without finishing training (not a failure): replace it.
                self.delete(pod, "WorkerExited", grace=0)
                replacing = True
                continue
            if pod.phase != "Failed":
                continue
            if is_permanent_failure(policy.restart_policy, pod.exit_code):
                self.status["restarts"] = restarts
                self.status["countedFailures"] = counted[-MAX_COUNTED_FAILURES:] or None
                return replacing, _failure_text(pod)
            if pod.uid not in counted:
                counted.append(pod.uid)
                restarts += 1
                self.event(REASON_WORKER_FAILED, f"Replacing {_failure_text(pod)}", warning=True)
            self.delete(pod, REASON_WORKER_FAILED, grace=0)
            replacing = True
        self.status["restarts"] = restarts
        self.status["countedFailures"] = counted[-MAX_COUNTED_FAILURES:] or None
        limit = min(policy.backoff_limit, job.spec.elastic.max_restarts)
        if restarts > limit:
            return replacing, (
                f"{restarts} worker failures exceed the limit of {limit} "
                "(min of spec.runPolicy.backoffLimit and spec.elastic.maxRestarts)"
            )
        return replacing, None

    def converge(self, job: LMTrainingJob) -> bool:
        """Create and delete children towards the spec; True when all workers are ready."""
        name, replicas = self.ref.name, job.spec.replicas
        beyond = [p for p in self.workers if (p.index or 0) >= replicas]
        for pod in sorted(beyond, key=lambda p: -(p.index or 0)):
            self.delete(pod, "ScaleDown")
        for pod in self.observed.pods:
            if pod.role == ROLE_RDZV and pod.phase == "Failed":
                self.delete(pod, "RendezvousFailed", grace=0)
        service = next((s for s in self.observed.services if s.name == rdzv_name(name)), None)
        if service is None:
            self.plan.actions.append(CreateService(rdzv_service(job, self.ref.uid)))
            return False
        if service.cluster_ip is None:
            return False
        if rdzv_name(name) not in self.pods:
            self.plan.actions.append(CreatePod(rdzv_pod(job, self.ref.uid), ROLE_RDZV))
        address = f"{service.cluster_ip}:{RDZV_PORT}"
        for index in range(replicas):
            if worker_name(name, index) not in self.pods:
                manifest = worker_pod(job, self.ref.uid, index, address)
                self.plan.actions.append(CreatePod(manifest, ROLE_WORKER))
        members = {p.index: p for p in self.workers if not p.deleting}
        return not beyond and all(
            index in members and members[index].ready and not members[index].finished
            for index in range(replicas)
        )

    def run(self, job: LMTrainingJob) -> None:
        spec = job.spec
        if self.conditions.set(Cond.CREATED, True, "JobCreated", "The job was accepted."):
            self.event("JobCreated", f"Created LMTrainingJob {self.ref.name}")
        self.status.setdefault("startTime", rfc3339(self.now))
        self.record_rescale(job)
        if spec.run_policy.suspend:
            self.suspend()
            return
        if self.conditions.is_true(Cond.SUSPENDED):
            self.conditions.set(Cond.SUSPENDED, False, "Resumed", "The job was resumed.")
            self.event("Resumed", "Resumed the job: recreating its pods")
            self.status["startTime"] = rfc3339(self.now)  # the deadline counts from here
        started = parse_time(self.status.get("startTime")) or self.now
        deadline = spec.run_policy.active_deadline_seconds
        if deadline is not None and self.now >= started + timedelta(seconds=deadline):
            self.end(False, REASON_DEADLINE, f"The job ran longer than {deadline} s")
            self.clean_up(job)
            return
        done = self.success(job)
        if done is not None:
            self.end(True, REASON_COMPLETED, done)
            self.clean_up(job)
            return
        replacing, fatal = self.handle_failures(job)
        if fatal is not None:
            reason = REASON_WORKER_FAILED if "exceed the limit" not in fatal else REASON_BACKOFF
            self.plan.actions.clear()  # keep the failed pods for `kubectl logs`
            self.end(False, reason, fatal)
            self.clean_up(job)
            return
        all_ready = self.converge(job)
        metrics = self.observed.metrics
        in_step = metrics is None or metrics.world_size in (None, spec.replicas)

        if replacing:
            self.conditions.set(Cond.RESTARTING, True, REASON_WORKER_FAILED, "Replacing workers.")
        elif self.conditions.is_true(Cond.RESTARTING) and all_ready:
            self.conditions.set(Cond.RESTARTING, False, "WorkersReplaced", "All workers run.")
        if self.conditions.is_true(Cond.SCALING) and all_ready and in_step:
            self.conditions.set(Cond.SCALING, False, "ScalingComplete", f"{spec.replicas} workers")
        ready = int(self.status.get("readyReplicas") or 0)
        running = ready >= spec.elastic.min_replicas or bool(metrics and metrics.world_size)
        if running:
            self.conditions.set(Cond.RUNNING, True, "JobRunning", f"{ready} workers ready.")
        else:
            self.conditions.clear(Cond.RUNNING, "WorkersNotReady", f"{ready} workers ready.")
        if self.conditions.is_true(Cond.RESTARTING):
            self.status["phase"] = Phase.RESTARTING.value
        elif self.conditions.is_true(Cond.SCALING):
            self.status["phase"] = Phase.SCALING.value
        elif running:
            self.status["phase"] = Phase.RUNNING.value
        else:
            self.status["phase"] = Phase.PENDING.value


def _problems(job: LMTrainingJob | InvalidResourceError) -> list[str]:
    if isinstance(job, InvalidResourceError):
        return job.problems
    return validate_worker_pod(job)


def unimplemented_settings(job: LMTrainingJob) -> list[str]:
    """Accepted settings the operator does not act on yet: said, never silently ignored."""
    notes = []
    if job.spec.autoscaling.policy != "None":
        notes.append(
            f"spec.autoscaling.policy {job.spec.autoscaling.policy} is not implemented yet: "
            "the job scales only when spec.replicas changes"
        )
    if job.spec.run_policy.scheduling.gang:
        notes.append(
            "spec.runPolicy.scheduling.gang is not implemented yet: pods are scheduled one "
            "by one (set schedulerName to a gang scheduler such as Volcano to get it)"
        )
    return notes


def _may_retry_validation(p: _Pass) -> bool:
    """A job that failed validation before it ever started is checked again on a new spec."""
    return (
        p.conditions.reason(Cond.FAILED) == REASON_INVALID
        and "startTime" not in p.old
        and p.ref.generation > int(p.old.get("observedGeneration") or 0)
    )


def reconcile(
    ref: JobRef,
    job: LMTrainingJob | InvalidResourceError,
    status: Mapping[str, Any] | None,
    observed: Observed,
    now: datetime,
) -> Plan:
    """The plan for one job: what to create and delete, its new status, the events."""
    p = _Pass(ref, status or {}, observed, now)
    p.observe()
    typed = job if isinstance(job, LMTrainingJob) else None
    problems = _problems(job)
    if p.old.get("phase") in TERMINAL_PHASES and not (not problems and _may_retry_validation(p)):
        p.clean_up(typed)
        return p.finish()
    if problems:
        p.end(False, REASON_INVALID, "; ".join(problems))
        p.clean_up(typed)
        return p.finish()
    assert typed is not None
    if p.ref.generation > int(p.old.get("observedGeneration") or 0):
        for note in unimplemented_settings(typed):
            p.event("NotImplemented", note, warning=True)
    if p.conditions.reason(Cond.FAILED) == REASON_INVALID:
        p.conditions.set(Cond.FAILED, False, "Validated", "The spec is valid now.")
        p.status.pop("completionTime", None)
    try:
        p.run(typed)
    except InvalidPodError as exc:  # validate_worker_pod saw it first; kept for safety
        p.plan.actions.clear()
        p.end(False, REASON_INVALID, str(exc))
    return p.finish()
