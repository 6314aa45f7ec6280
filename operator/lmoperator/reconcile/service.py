"""The LMService reconciler: a pure function from what is to what should be done.

Level-based, like reconcile/trainingjob.py: the input is the service, its last status,
its children (the server Deployment, the Service, the PodDisruptionBudget, the server
pods), the LMTrainingJob it serves from (if any) and what the servers last reported
(requests in flight, why a pod is not ready); the output is a Plan.

The Deployment does the rolling: the operator writes the pod template (a new model,
compression, serving setting or image changes it, and the Deployment rolls one extra
pod at a time, maxUnavailable 0, so old pods serve until new ones are ready) and the
replica count, which it restores if anyone else changes it on the Deployment. Before a
scale-down it first sets each pod's deletion cost from its in-flight requests, so the
ReplicaSet controller removes the least-loaded pods.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lmoperator.api import InvalidResourceError, kinds
from lmoperator.api.service import (
    LMService,
    ServiceConditionType,
    ServicePhase,
)
from lmoperator.builders.pods import ROLE_LABEL, InvalidPodError
from lmoperator.builders.service import (
    DELETION_COST_ANNOTATION,
    ROLE_SERVER,
    SERVER_CONTAINER,
    TEMPLATE_HASH_ANNOTATION,
    ModelSource,
    deletion_costs,
    deployment_name,
    endpoint,
    pdb_name,
    runtime_problems,
    server_deployment,
    server_pdb,
    server_selector,
    server_service,
    validate_server_pod,
)
from lmoperator.reconcile.children import (
    CreateObject,
    ObservedObject,
    ObservedPod,
    ObservedService,
    OwnerRef,
    PatchObject,
    Plan,
    merge_patch,
    observe_pod,
)
from lmoperator.reconcile.conditions import Conditions

Cond = ServiceConditionType
Phase = ServicePhase

REASON_INVALID = "Invalid"
REASON_JOB_NOT_FOUND = "TrainingJobNotFound"
REASON_NO_CHECKPOINT = "NoCheckpointYet"
REASON_NO_CHECKPOINT_LOCATION = "NoCheckpointLocation"
REASON_MODEL_FOUND = "ModelFound"
REASON_SCALED_TO_ZERO = "ScaledToZero"
REASON_LOADING = "Loading"
REASON_SERVING = "Serving"
REASON_ROLLOUT_STALLED = "RolloutStalled"
REASON_ROLLING = "RollingUpdate"
REASON_UNDER_REPLICATED = "UnderReplicated"
REASON_HEALTHY = "AllReplicasReady"
REASON_SCALED = "Scaled"
REASON_CREATED = "Created"
REASON_UPDATED = "TemplateUpdated"
REASON_RESTORED = "ReplicasRestored"

# The servers' /readyz states (lmworker.serve) that the operator reads.
STATE_REFUSED = "refused"


def service_ref(name: str, namespace: str, uid: str, generation: int = 0) -> OwnerRef:
    return OwnerRef(kinds.SERVICE, name, namespace, uid, generation)


@dataclass(frozen=True)
class NotReady:
    """Why a server pod says it is not ready (its /readyz answer)."""

    state: str  # loading | refused | draining | ...
    message: str


@dataclass(frozen=True)
class ServedModel:
    """What a ready server reports about the model it serves."""

    precision: str | None = None
    perplexity_before: float | None = None
    perplexity_after: float | None = None


@dataclass(frozen=True)
class Observed:
    deployment: ObservedObject | None = None
    service: ObservedService | None = None
    pdb: ObservedObject | None = None
    pods: Sequence[ObservedPod] = ()
    # Pod name -> its deletion-cost annotation.
    deletion_cost: Mapping[str, int] = field(default_factory=dict)
    # The body of the LMTrainingJob named by spec.model.fromTrainingJob (None: not found).
    training_job: Mapping[str, Any] | None = None
    # From the servers' last scrapes: requests in flight, why unready, what is served.
    in_flight: Mapping[str, int] = field(default_factory=dict)
    not_ready: Mapping[str, NotReady] = field(default_factory=dict)
    served: ServedModel | None = None


def observe_server_pod(pod: Mapping[str, Any]) -> ObservedPod:
    return observe_pod(pod, SERVER_CONTAINER)


def pod_deletion_cost(pod: Mapping[str, Any]) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# Where the model is


@dataclass(frozen=True)
class Unresolved:
    """The model cannot be served yet (or any more), and why."""

    reason: str
    message: str


def model_source(
    service: LMService, training_job: Mapping[str, Any] | None
) -> ModelSource | Unresolved:
    """Where the servers load the model from.

    `fromTrainingJob`: the job's Hugging Face export once it has Succeeded, else its
    checkpoint directory (the newest complete checkpoint when a pod starts, or `step`);
    a job with no complete checkpoint yet is Unresolved, and so is a missing job.
    """
    model = service.spec.model
    if model.hf is not None:
        return ModelSource("hf", model.hf.path, model.hf.claim_name, origin="model.hf")
    if model.checkpoint is not None:
        c = model.checkpoint
        return ModelSource("checkpoint", c.path, c.claim_name, origin="model.checkpoint")
    ref = model.from_training_job
    assert ref is not None  # the API allows exactly one source
    namespace = service.metadata.namespace or "default"
    if training_job is None:
        return Unresolved(
            REASON_JOB_NOT_FOUND,
            f"LMTrainingJob {ref.name} was not found in namespace {namespace}; create it, "
            "or point spec.model.fromTrainingJob.name at an existing job",
        )
    spec = training_job.get("spec") or {}
    status = training_job.get("status") or {}
    checkpoint = spec.get("checkpoint") or {}
    path, claim = checkpoint.get("path"), checkpoint.get("claimName")
    if not isinstance(path, str) or not path:
        return Unresolved(
            REASON_NO_CHECKPOINT_LOCATION,
            f"LMTrainingJob {ref.name} has no spec.checkpoint, so it saves nothing to serve; "
            "give the job a checkpoint location",
        )
    claim = claim if isinstance(claim, str) and claim else None
    job_label = f"LMTrainingJob {ref.name}"
    if ref.step is not None:
        return ModelSource("checkpoint", path, claim, ref.step, f"{job_label}, step {ref.step}")
    if status.get("phase") == "Succeeded":
        export = posixpath.join(path, "export")
        return ModelSource("hf", export, claim, origin=f"{job_label}, export of the finished job")
    last = status.get("lastCheckpoint") or {}
    if not isinstance(last.get("step"), int):
        step, phase = status.get("step"), status.get("phase") or "Pending"
        at = f" (phase {phase}, step {step})" if step is not None else f" (phase {phase})"
        return Unresolved(
            REASON_NO_CHECKPOINT,
            f"{job_label} has no complete checkpoint yet{at}; the service starts serving "
            "when the job writes its first one",
        )
    return ModelSource(
        "checkpoint", path, claim, origin=f"{job_label}, newest checkpoint (step {last['step']})"
    )


def problems_of(service: LMService | InvalidResourceError) -> list[str]:
    """What makes the service unservable whatever its model (empty when none)."""
    if isinstance(service, InvalidResourceError):
        return list(service.problems)
    return validate_server_pod(service) + runtime_problems(service, None)


# --------------------------------------------------------------------------------------
# The pass


def _template_hash(deployment: ObservedObject) -> str | None:
    return deployment.annotations.get(TEMPLATE_HASH_ANNOTATION)


def reconcile(
    ref: OwnerRef,
    service: LMService | InvalidResourceError,
    status: Mapping[str, Any],
    observed: Observed,
    now: datetime,
    problems: Sequence[str] | None = None,
) -> Plan:
    """One pass: the plan that moves the children towards the spec, and the new status."""
    plan = Plan()
    new_status: dict[str, Any] = dict(status)
    conditions = Conditions(status.get("conditions"), now, ref.generation)
    new_status["observedGeneration"] = ref.generation
    new_status["selector"] = server_selector(ref.name)
    live = [p for p in observed.pods if p.role == ROLE_SERVER and not p.deleting]
    new_status["replicas"] = len(live)
    new_status["readyReplicas"] = sum(1 for p in live if p.ready)

    def finish(phase: Phase) -> Plan:
        new_status["phase"] = phase.value
        new_status["conditions"] = conditions.to_list()
        plan.status = new_status
        return plan

    issues = list(problems) if problems is not None else problems_of(service)
    source: ModelSource | Unresolved = Unresolved(REASON_INVALID, "")
    if isinstance(service, LMService):
        source = model_source(service, observed.training_job)
        if isinstance(source, ModelSource):
            issues += runtime_problems(service, source)
    if issues or isinstance(service, InvalidResourceError):
        message = "; ".join(issues)
        if conditions.set(Cond.READY, False, REASON_INVALID, message):
            plan.event(REASON_INVALID, f"The spec is invalid: {message}", warning=True)
        return finish(Phase.FAILED)

    namespace = ref.namespace
    new_status["endpoint"] = endpoint(ref.name, namespace)
    if observed.service is None:
        plan.actions.append(
            CreateObject(kinds.K8S_SERVICE, server_service(service, ref.uid), ROLE_SERVER)
        )
    if observed.pdb is None:
        plan.actions.append(
            CreateObject(kinds.POD_DISRUPTION_BUDGET, server_pdb(service, ref.uid), ROLE_SERVER)
        )

    desired = service.spec.replicas
    deployment = observed.deployment
    if isinstance(source, Unresolved):
        conditions.set(Cond.MODEL_LOADED, False, source.reason, source.message)
        if deployment is None:
            conditions.set(Cond.READY, False, source.reason, source.message)
            return finish(Phase.PENDING)
        # Keep serving what the pods loaded; only the replica count is still ours.
        _scale(plan, ref, deployment, desired, observed)
        return _serving_status(plan, ref, new_status, conditions, observed, desired, finish)

    new_status["model"] = _model_status(source, observed.served)
    try:
        manifest = server_deployment(service, ref.uid, source, desired)
    except InvalidPodError as exc:  # problems_of checked the pod; a source-specific one
        message = "; ".join(exc.problems)
        conditions.set(Cond.READY, False, REASON_INVALID, message)
        return finish(Phase.FAILED)
    if deployment is None:
        plan.actions.append(CreateObject(kinds.DEPLOYMENT, manifest, ROLE_SERVER))
        plan.event(REASON_CREATED, f"Created Deployment {manifest['metadata']['name']}")
        conditions.set(Cond.MODEL_LOADED, False, REASON_LOADING, f"Loading {source.origin}")
        conditions.set(Cond.READY, False, REASON_LOADING, f"Starting {desired} server(s)")
        return finish(Phase.LOADING if desired else Phase.PENDING)
    wanted_hash = manifest["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    if _template_hash(deployment) != wanted_hash:
        patch: dict[str, Any] = {
            "metadata": {"annotations": manifest["metadata"]["annotations"]},
            "spec": merge_patch(
                {"template": deployment.spec.get("template") or {}},
                {"template": manifest["spec"]["template"]},
            ),
        }
        plan.actions.append(
            PatchObject(kinds.DEPLOYMENT, deployment.name, patch, ROLE_SERVER, REASON_UPDATED)
        )
        plan.event(REASON_UPDATED, f"Rolling out a new pod template: {source.origin}")
    _scale(plan, ref, deployment, desired, observed)
    return _serving_status(plan, ref, new_status, conditions, observed, desired, finish)


def _scale(
    plan: Plan, ref: OwnerRef, deployment: ObservedObject, desired: int, observed: Observed
) -> None:
    """Set the Deployment's replicas to the service's; before a scale-down, the pods'
    deletion costs from their in-flight requests (least loaded go first)."""
    current = deployment.replicas
    if current == desired:
        return
    if current is not None and desired < current:
        live = [p.name for p in observed.pods if not p.deleting]
        for name, cost in sorted(deletion_costs(dict(observed.in_flight), live).items()):
            if observed.deletion_cost.get(name) != cost:
                patch = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}}
                plan.actions.append(PatchObject(kinds.POD, name, patch, ROLE_SERVER, "LoadRanked"))
    plan.actions.append(
        PatchObject(
            kinds.DEPLOYMENT,
            deployment.name,
            {"spec": {"replicas": desired}},
            ROLE_SERVER,
            REASON_SCALED,
            subresource="scale",
        )
    )
    if current is not None:
        plan.scaled = "up" if desired > current else "down"
        plan.event(REASON_SCALED, f"Scaled the servers from {current} to {desired}")


def _model_status(source: ModelSource, served: ServedModel | None) -> dict[str, Any]:
    out: dict[str, Any] = {"checkpoint": source.origin}
    if served is not None:
        if served.precision:
            out["precision"] = served.precision
        if served.perplexity_before is not None:
            out["perplexityBefore"] = served.perplexity_before
        if served.perplexity_after is not None:
            out["perplexityAfter"] = served.perplexity_after
    return out


def _serving_status(
    plan: Plan,
    ref: OwnerRef,
    new_status: dict[str, Any],
    conditions: Conditions,
    observed: Observed,
    desired: int,
    finish: Callable[[Phase], Plan],
) -> Plan:
    """Phase and conditions from the Deployment and what the servers say."""
    deployment = observed.deployment
    dstatus = deployment.status if deployment is not None else {}
    updated = dstatus.get("updatedReplicas")
    new_status["updatedReplicas"] = updated if isinstance(updated, int) else 0
    ready = int(new_status.get("readyReplicas") or 0)
    refused = {
        name: why for name, why in sorted(observed.not_ready.items()) if why.state == STATE_REFUSED
    }
    stalled_by_deadline = _deployment_condition(dstatus, "Progressing") == (
        "False",
        "ProgressDeadlineExceeded",
    )
    if refused or stalled_by_deadline:
        if refused:
            name, why = next(iter(refused.items()))
            message = f"pod {name} will not become ready: {why.message}"
        else:
            message = "the Deployment's rollout passed its progress deadline"
        if ready:
            message += f"; {ready} older pod(s) keep serving"
        if conditions.set(Cond.DEGRADED, True, REASON_ROLLOUT_STALLED, message):
            plan.event(REASON_ROLLOUT_STALLED, message, warning=True)
    elif ready < desired:
        conditions.set(
            Cond.DEGRADED,
            bool(ready),
            REASON_UNDER_REPLICATED if ready else REASON_LOADING,
            f"{ready} of {desired} server(s) ready",
        )
    else:
        conditions.clear(Cond.DEGRADED, REASON_HEALTHY, f"{ready} of {desired} server(s) ready")
    if desired == 0:
        conditions.set(Cond.READY, False, REASON_SCALED_TO_ZERO, "spec.replicas is 0")
        return finish(Phase.PENDING)
    if ready:
        conditions.set(Cond.MODEL_LOADED, True, REASON_MODEL_FOUND, "A server loaded the model")
        conditions.set(Cond.READY, True, REASON_SERVING, f"{ready} server(s) ready")
        healthy = ready >= desired and not refused and not stalled_by_deadline
        return finish(Phase.READY if healthy else Phase.DEGRADED)
    loading = next(iter(observed.not_ready.values()), None)
    message = loading.message if loading is not None else "Waiting for a server to be ready"
    if refused:
        conditions.set(Cond.MODEL_LOADED, False, REASON_ROLLOUT_STALLED, message)
    conditions.set(Cond.READY, False, REASON_LOADING, message)
    return finish(Phase.LOADING)


def _deployment_condition(status: Mapping[str, Any], type_: str) -> tuple[str, str] | None:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == type_:
            return str(c.get("status")), str(c.get("reason"))
    return None


def is_server_pod(pod: Mapping[str, Any]) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL) == ROLE_SERVER


__all__ = [
    "NotReady",
    "Observed",
    "ServedModel",
    "Unresolved",
    "deployment_name",
    "model_source",
    "observe_server_pod",
    "pdb_name",
    "pod_deletion_cost",
    "problems_of",
    "reconcile",
    "service_ref",
]
