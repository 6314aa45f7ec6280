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
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lmoperator.api import InvalidResourceError, kinds
from lmoperator.api.common import MAX_SCALING_HISTORY
from lmoperator.api.trainingjob import (
    MAX_COUNTED_FAILURES,
    MAX_VALIDATION_HISTORY,
    CleanPodPolicy,
    LMTrainingJob,
    RestartPolicy,
    TrainingConditionType,
    TrainingPhase,
)
from lmoperator.builders.pods import (
    INDEX_LABEL,
    PROMOTED_ANNOTATION,
    ROLE_LABEL,
    InvalidPodError,
)
from lmoperator.builders.trainingjob import (
    NO_PEERS,
    ROLE_NETWORK,
    ROLE_RDZV,
    ROLE_SPARE,
    ROLE_WORKER,
    WORKER_CONTAINER,
    NetworkPeers,
    network_policy,
    network_policy_name,
    new_rdzv_token,
    rdzv_name,
    rdzv_pod,
    rdzv_secret,
    rdzv_service,
    spare_name,
    validate_worker_pod,
    worker_name,
    worker_pod,
    worker_selector,
)
from lmoperator.reconcile.children import (
    CreateObject,
    DeleteObject,
    ObservedObject,
    ObservedPod,
    ObservedService,
    OwnerRef,
    PatchObject,
    Plan,
    SparePromotion,
    observe_pod,
)
from lmoperator.reconcile.conditions import Conditions, parse_time, rfc3339
from lmoperator.worker_metrics import WorkerMetrics
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
REASON_SPARE_PROMOTED = "SparePromoted"
REASON_SPARE_FAILED = "SpareFailed"
# Status fields that move while a job trains: their writes may wait (reconcile/status.py).
PROGRESS_FIELDS = frozenset(
    {"step", "loss", "tokensPerSecond", "lastCheckpoint", "validationLoss", "validationHistory"}
)


# --------------------------------------------------------------------------------------
# Inputs


def job_ref(name: str, namespace: str, uid: str, generation: int = 0) -> OwnerRef:
    return OwnerRef(kinds.TRAINING_JOB, name, namespace, uid, generation)


@dataclass(frozen=True)
class Observed:
    pods: Sequence[ObservedPod] = ()
    services: Sequence[ObservedService] = ()
    metrics: WorkerMetrics | None = None
    network_policies: Sequence[ObservedObject] = ()


def observe_job_pod(pod: Mapping[str, Any]) -> ObservedPod:
    """A worker or rendezvous pod, read through its main container."""
    return observe_pod(pod, WORKER_CONTAINER)


# --------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True)
class CompletionReport:
    """A worker's completion report: {"completed": true, "step": N, "loss": x,
    "validationLoss": v} (the losses when the worker measured them)."""

    step: int
    loss: float | None = None
    validation_loss: float | None = None


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _completion_report(message: str | None) -> CompletionReport | None:
    """The worker's completion report, or None when the message is not one."""
    report = _report(message)
    if report is not None and report.get("completed") is True:
        step = report.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            return CompletionReport(
                step, _finite(report.get("loss")), _finite(report.get("validationLoss"))
            )
    return None


def _report(message: str | None) -> dict[str, Any] | None:
    """A worker's termination message as JSON, or None."""
    if not message:
        return None
    try:
        report = json.loads(message)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def record_validation(
    history: Sequence[Mapping[str, Any]] | None,
    step: int,
    loss: float,
    limit: int = MAX_VALIDATION_HISTORY,
) -> list[dict[str, Any]]:
    """The validation history with (step, loss) added, oldest first and at most `limit`.

    A measurement at the newest step replaces it (the final one may repeat the last
    checkpoint's step); one older than the newest is ignored (a stale scrape). When the
    history is full, every second point is dropped from the oldest on, keeping the newest:
    the history keeps spanning the whole run, which comparisons of trials at the same step
    (LMTuningJob's early stopping) need, at half the resolution.
    """
    points = [
        {"step": int(p["step"]), "loss": float(p["loss"])}
        for p in history or ()
        if isinstance(p, Mapping) and isinstance(p.get("step"), int) and _finite(p.get("loss"))
    ]
    if points and step < points[-1]["step"]:
        return points
    if points and step == points[-1]["step"]:
        points[-1] = {"step": step, "loss": loss}
        return points
    points.append({"step": step, "loss": loss})
    if len(points) > limit:
        newest = points[-1]
        points = [*points[:-1][::2], newest]
    return points


def report_status_fields(message: str | None) -> dict[str, Any]:
    """Status fields a completion report carries beyond step and the losses: the held-out
    loss before training, and the precision the workers chose (with why)."""
    report = _report(message) or {}
    fields: dict[str, Any] = {}
    for key in ("initialValidationLoss",):
        value = _finite(report.get(key))
        if value is not None:
            fields[key] = value
    precision = report.get("precision")
    if isinstance(precision, dict) and all(
        isinstance(precision.get(k), str) for k in ("requested", "chosen", "reason")
    ):
        fields["precision"] = {k: precision[k][:1024] for k in ("requested", "chosen", "reason")}
    return fields


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


class _Pass:
    """One reconciliation pass: accumulates the plan."""

    def __init__(
        self, ref: OwnerRef, status: Mapping[str, Any], observed: Observed, now: datetime
    ) -> None:
        self.ref = ref
        self.old = dict(status)
        self.now = now
        self.observed = observed
        self.plan = Plan()
        self.status: dict[str, Any] = dict(status)
        self.conditions = Conditions(status.get("conditions"), now, ref.generation)
        self.pods = {p.name: p for p in observed.pods}
        self.peers = NO_PEERS
        self.new_token: Callable[[], str] = new_rdzv_token
        self.workers = sorted(
            (p for p in observed.pods if p.role == ROLE_WORKER and p.index is not None),
            key=lambda p: p.index or 0,
        )
        self.promoted_here: list[str] = []

    # -- helpers ----------------------------------------------------------------------

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.event(reason, message, warning)

    def delete(self, pod: ObservedPod, reason: str, grace: int | None = None) -> None:
        if not pod.deleting:
            self.plan.delete(kinds.POD, pod.name, pod.role, reason, grace, pod.uid)

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
            if metrics.validation_loss is not None and metrics.validation_step is not None:
                self.validation(metrics.validation_step, metrics.validation_loss)
            if metrics.initial_validation_loss is not None:
                self.status["initialValidationLoss"] = metrics.initial_validation_loss
            if metrics.precision is not None:
                requested, chosen, reason = metrics.precision
                self.status["precision"] = {
                    "requested": requested,
                    "chosen": chosen,
                    "reason": reason[:1024],
                }
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

    def validation(self, step: int, loss: float) -> None:
        self.status["validationLoss"] = loss
        self.status["validationHistory"] = record_validation(
            self.status.get("validationHistory"), step, loss
        )

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
            self.plan.actions.append(
                DeleteObject(
                    kinds.TRAINING_JOB,
                    self.ref.name,
                    "",
                    f"ttlSecondsAfterFinished ({ttl} s) passed",
                )
            )

    # -- the running job ----------------------------------------------------------------

    def record_rescale(self, job: LMTrainingJob, autoscaled_to: int | None) -> None:
        """A change of spec.replicas: the Scaling condition, and (unless the autoscaler
        wrote it: `autoscaled_to`, whose caller records its own decision) a manual
        decision in scalingHistory with an Event."""
        replicas = job.spec.replicas
        previous = self.status.get("targetReplicas")
        self.status["targetReplicas"] = replicas
        if not isinstance(previous, int) or previous == replicas:
            return
        up = replicas > previous
        self.plan.scaled = "up" if up else "down"
        direction = "ScalingUp" if up else "ScalingDown"
        if autoscaled_to == replicas:
            self.conditions.set(Cond.SCALING, True, direction, f"{previous} → {replicas} workers")
            return
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
        members = [p for p in self.workers if (p.index or 0) < job.spec.replicas]
        # The report is the truth, whatever the exit code: a worker writes it only once
        # training reached its steps (and may be killed while exiting).
        reports = [
            (pod, report)
            for pod in self.workers
            if pod.finished
            and (report := _completion_report(pod.termination_message)) is not None
            and report.step >= steps
        ]
        # Only rank 0 measures the final held-out loss (after the last step, before its
        # export), so another rank's report often comes first. A job that holds out
        # text waits for the report with the loss while a member still runs: deciding on
        # the first report would leave the last checkpoint's loss as the final one (what
        # a tuning job then takes for the trial's objective).
        with_loss = [(pod, r) for pod, r in reports if r.validation_loss is not None]
        if (
            reports
            and not with_loss
            and job.spec.data.validation_fraction > 0
            and any(not p.finished for p in members)
        ):
            return None
        for pod, report in with_loss or reports[:1]:
            # The report's figures are the final ones, however short the run was next to
            # the metrics interval.
            self.status["step"] = max(report.step, int(self.status.get("step") or 0))
            if report.loss is not None:
                self.status["loss"] = report.loss
            if report.validation_loss is not None:
                self.validation(report.step, report.validation_loss)
            self.status.update(report_status_fields(pod.termination_message))
            return f"{pod.name} reported training complete at step {report.step} of {steps}"
        known = [self.status.get("step"), self.observed.metrics and self.observed.metrics.step]
        step = max((s for s in known if isinstance(s, int)), default=0)
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

    def converge_network_policy(self, job: LMTrainingJob) -> None:
        """The job's NetworkPolicy exists and is up to date while enabled, else is gone."""
        name = network_policy_name(self.ref.name)
        existing = next((n for n in self.observed.network_policies if n.name == name), None)
        if not job.spec.network_policy.enabled:
            if existing is not None and not existing.deleting:
                self.plan.delete(
                    kinds.NETWORK_POLICY,
                    name,
                    ROLE_NETWORK,
                    "NetworkPolicyDisabled",
                    uid=existing.uid,
                )
            return
        desired = network_policy(job, self.ref.uid, self.peers)
        if existing is None:
            self.plan.actions.append(CreateObject(kinds.NETWORK_POLICY, desired, ROLE_NETWORK))
        elif not existing.deleting and dict(existing.spec) != desired["spec"]:
            # The operator's or the scrapers' peers changed (a chart upgrade).
            self.plan.actions.append(
                PatchObject(
                    kinds.NETWORK_POLICY,
                    name,
                    {"spec": desired["spec"]},
                    ROLE_NETWORK,
                    "NetworkPeersChanged",
                )
            )

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
            manifest = rdzv_service(job, self.ref.uid)
            self.plan.actions.append(CreateObject(kinds.K8S_SERVICE, manifest, ROLE_RDZV))
            return False
        if service.cluster_ip is None:
            return False
        # Before any pod of the job starts: no moment without the policy.
        self.converge_network_policy(job)
        if rdzv_name(name) not in self.pods:
            # The secret first: the store and the workers mount it. Creating it again
            # keeps the one that exists (its token stays what running pods hold).
            secret = rdzv_secret(job, self.ref.uid, self.new_token())
            self.plan.actions.append(CreateObject(kinds.SECRET, secret, ROLE_RDZV))
            manifest = rdzv_pod(job, self.ref.uid)
            self.plan.actions.append(CreateObject(kinds.POD, manifest, ROLE_RDZV))
        address = f"{service.cluster_ip}:{RDZV_PORT}"
        spares = self.usable_spares()
        held = self.held_indexes()
        for index in range(replicas):
            if index in held:
                continue
            if spares:
                self.promote(spares.pop(0), index, replicas)
            elif worker_name(name, index) not in self.pods:
                manifest = worker_pod(job, self.ref.uid, index, address)
                self.plan.actions.append(CreateObject(kinds.POD, manifest, ROLE_WORKER))
        self.repeat_promotions(replicas)
        self.converge_spares(job, address)
        members = {p.index: p for p in self.workers if not p.deleting}
        return not beyond and all(
            index in members and members[index].ready and not members[index].finished
            for index in range(replicas)
        )

    # -- warm spares ----------------------------------------------------------------

    def deleted_here(self) -> set[str]:
        """Pods this pass deletes: they hold nothing any more."""
        return {
            a.name for a in self.plan.actions if isinstance(a, DeleteObject) and a.kind == kinds.POD
        }

    def held_indexes(self) -> set[int]:
        """Worker indexes a live pod holds (one starting counts: it will train)."""
        gone = self.deleted_here()
        return {
            p.index
            for p in self.workers
            if p.index is not None and not p.deleting and not p.finished and p.name not in gone
        }

    def spare_pods(self) -> list[ObservedPod]:
        """The job's spares that are still spares, by their number."""
        found = [p for p in self.observed.pods if p.role == ROLE_SPARE]
        return sorted(found, key=lambda p: (len(p.name), p.name))

    def usable_spares(self) -> list[ObservedPod]:
        """Spares that may be promoted now: standing by (ready) with an address."""
        return [
            p for p in self.spare_pods() if p.ready and p.ip and not p.deleting and not p.finished
        ]

    def promote(self, spare: ObservedPod, index: int, replicas: int) -> None:
        """Relabel the spare as worker `index`, then tell it (over HTTP, by the handler).

        The relabelling comes first: from then on the pod holds the index in every later
        pass, whatever happens to the order, which is repeated until the pod trains.
        """
        assert spare.ip is not None
        order = json.dumps({"index": index, "expected": replicas}, sort_keys=True)
        patch = {
            "metadata": {
                "labels": {ROLE_LABEL: ROLE_WORKER, INDEX_LABEL: str(index)},
                "annotations": {PROMOTED_ANNOTATION: order},
            }
        }
        self.plan.actions.append(
            PatchObject(kinds.POD, spare.name, patch, ROLE_WORKER, REASON_SPARE_PROMOTED)
        )
        self.plan.promotions.append(SparePromotion(spare.name, spare.ip, index, replicas))
        self.promoted_here.append(spare.name)
        self.event(REASON_SPARE_PROMOTED, f"Promoted spare {spare.name} to worker index {index}")

    def repeat_promotions(self, replicas: int) -> None:
        """A promoted pod that does not train yet gets its order again (it is idempotent):
        the last one may have been lost with the operator or the network."""
        gone = self.deleted_here()
        for pod in self.workers:
            if (
                pod.promoted
                and not pod.ready
                and pod.ip
                and pod.index is not None
                and not pod.deleting
                and not pod.finished
                and pod.name not in gone
            ):
                self.plan.promotions.append(SparePromotion(pod.name, pod.ip, pod.index, replicas))

    def converge_spares(self, job: LMTrainingJob, address: str) -> None:
        """Keep spec.elastic.warmSpares spares: replace failed ones, refill once a promoted
        spare trains, remove the ones beyond the count (the newest first)."""
        wanted = job.spec.elastic.warm_spares
        live: list[ObservedPod] = []
        for pod in self.spare_pods():
            if pod.deleting or pod.name in self.promoted_here:
                continue
            if pod.finished:
                # A spare has nothing to finish: training ended (it exits then) or it
                # failed; either way it goes, and a failure is said.
                if pod.phase == "Failed":
                    self.event(
                        REASON_SPARE_FAILED, f"Replacing spare {_failure_text(pod)}", warning=True
                    )
                self.delete(pod, REASON_SPARE_FAILED if pod.phase == "Failed" else "SpareExited", 0)
                continue
            live.append(pod)
        for pod in live[wanted:][::-1]:
            self.delete(pod, "WarmSparesReduced")
        live = live[:wanted]
        # A new spare starts Python, torch and the model: on a shared node that slows the
        # promoted spare's first steps, so the pool is refilled once it trains.
        joining = [
            p
            for p in self.workers
            if p.promoted and not p.ready and not p.finished and not p.deleting
        ]
        refill = 0 if joining or self.promoted_here else wanted - len(live)
        number = 0
        for _ in range(refill):
            while spare_name(self.ref.name, number) in self.pods:
                number += 1
            manifest = worker_pod(job, self.ref.uid, number, address, spare=True)
            self.plan.actions.append(CreateObject(kinds.POD, manifest, ROLE_SPARE))
            number += 1
        promoted = sum(1 for p in self.workers if p.promoted and not p.deleting)
        if wanted or live or promoted or self.promoted_here:
            self.status["spares"] = {
                "total": len(live),
                "ready": sum(1 for p in live if p.ready),
                "promoted": promoted + len(self.promoted_here),
            }
        else:
            self.status.pop("spares", None)

    def run(self, job: LMTrainingJob, autoscaled_to: int | None) -> None:
        spec = job.spec
        if self.conditions.set(Cond.CREATED, True, "JobCreated", "The job was accepted."):
            self.event("JobCreated", f"Created LMTrainingJob {self.ref.name}")
        self.status.setdefault("startTime", rfc3339(self.now))
        self.record_rescale(job, autoscaled_to)
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
        world = spec.replicas * spec.worker.processes_per_pod
        in_step = metrics is None or metrics.world_size in (None, world)

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


def problems_of(job: LMTrainingJob | InvalidResourceError) -> list[str]:
    """Why the job cannot run: its validation errors, or what its pods may not do."""
    if isinstance(job, InvalidResourceError):
        return job.problems
    return validate_worker_pod(job)


def unimplemented_settings(job: LMTrainingJob) -> list[str]:
    """Accepted settings the operator does not act on yet: said, never silently ignored."""
    notes = []
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
    ref: OwnerRef,
    job: LMTrainingJob | InvalidResourceError,
    status: Mapping[str, Any] | None,
    observed: Observed,
    now: datetime,
    problems: list[str] | None = None,
    autoscaled_to: int | None = None,
    peers: NetworkPeers = NO_PEERS,
    new_token: Callable[[], str] = new_rdzv_token,
) -> Plan:
    """The plan for one job: what to create and delete, its new status, the events.

    `problems` is `problems_of(job)` when the caller has it already (it depends on the
    spec only, and building the pods to check them is most of a pass's work).
    `autoscaled_to`: the spec.replicas the job's autoscaler wrote (its decision is
    recorded by the caller), so that the rescale is not recorded as a manual one. `peers`
    are who may scrape the job's metrics besides its own pods (the operator's flags);
    `new_token` makes the rendezvous Secret's token when the Secret is to be created
    (randomness is an input, as time is).
    """
    p = _Pass(ref, status or {}, observed, now)
    p.peers, p.new_token = peers, new_token
    p.observe()
    typed = job if isinstance(job, LMTrainingJob) else None
    problems = problems_of(job) if problems is None else problems
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
        p.run(typed, autoscaled_to)
    except InvalidPodError as exc:  # validate_worker_pod saw it first; kept for safety
        p.plan.actions.clear()
        p.end(False, REASON_INVALID, str(exc))
    return p.finish()
