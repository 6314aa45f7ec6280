"""kopf handlers of LMTrainingJob: every event and a 1 s timer run the same reconcile_job.

reconcile_job reads the job and its children through kube.py, scrapes rank 0's metrics,
asks the pure core (lmoperator.reconcile.trainingjob) for a plan, then writes the status,
applies the actions and posts the events. Bad input never raises out of it except as
kopf's own errors: an invalid spec becomes a Failed/Invalid status, API failures a
TemporaryError (kopf retries).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from lmoperator.api import InvalidResourceError, LMTrainingJob, parse_resource
from lmoperator.api.trainingjob import API_VERSION, GROUP, VERSION
from lmoperator.builders.trainingjob import KIND, ROLE_WORKER, children_selector
from lmoperator.kube import TRAINING_JOBS, Kube, KubeError
from lmoperator.metrics_client import WorkerMetrics, rank0_metrics
from lmoperator.operator_metrics import (
    CHILDREN_CREATED,
    CHILDREN_DELETED,
    RECONCILE_DURATION,
    RECONCILE_TOTAL,
    SCALING_ACTIONS,
)
from lmoperator.reconcile.trainingjob import (
    REASON_INVALID,
    TERMINAL_PHASES,
    CreatePod,
    CreateService,
    DeleteJob,
    DeletePod,
    JobRef,
    Observed,
    ObservedPod,
    Plan,
    observe_pod,
    observe_service,
    reconcile,
)

TIMER_INTERVAL_SECONDS = 1.0
RETRY_DELAY_SECONDS = 2.0
Scraper = Callable[[Iterable[str]], WorkerMetrics | None]
# What kopf passes as `logger`.
Logger = logging.Logger | logging.LoggerAdapter[Any]

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(uid: str) -> threading.Lock:
    """One pass at a time per job: the timer and the event handlers may overlap."""
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def parse_job(body: Mapping[str, Any]) -> LMTrainingJob | InvalidResourceError:
    """The typed job, or why it is invalid. The status is the operator's, not validated."""
    doc = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    meta = dict(doc.get("metadata") or {})
    # Only what the model reads; server-set fields (managedFields, ...) stay out of it.
    doc["metadata"] = {
        k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
    }
    try:
        resource = parse_resource(doc)
    except InvalidResourceError as exc:
        return exc
    if not isinstance(resource, LMTrainingJob):
        return InvalidResourceError(KIND, [f"kind: must be {KIND}"])
    return resource


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status `old` into `new` (null removes a field)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def _owned(objects: list[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    """Only children this job controls: the operator never touches what it does not own."""
    return [
        o
        for o in objects
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in (o.get("metadata") or {}).get("ownerReferences") or []
        )
    ]


def _metrics_of(pods: list[ObservedPod], scrape: Scraper) -> WorkerMetrics | None:
    ready = sorted(
        (p for p in pods if p.role == ROLE_WORKER and p.ready and p.ip and not p.deleting),
        key=lambda p: p.index or 0,
    )
    return scrape([p.ip for p in ready if p.ip]) if ready else None


def _apply(kube: Kube, ref: JobRef, plan: Plan, logger: Logger) -> list[str]:
    """Carry out the plan's actions; the failures, as messages."""
    failures: list[str] = []
    involved = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "namespace": ref.namespace,
        "uid": ref.uid,
    }
    notes: list[tuple[str, str, str]] = []
    for action in plan.actions:
        try:
            if isinstance(action, CreateService):
                if kube.create_service(ref.namespace, action.manifest):
                    CHILDREN_CREATED.labels("Service", "rdzv").inc()
                    notes.append(("SuccessfulCreateService", f"Created service {action.name}", ""))
            elif isinstance(action, CreatePod):
                if kube.create_pod(ref.namespace, action.manifest):
                    CHILDREN_CREATED.labels("Pod", action.role).inc()
                    notes.append(("SuccessfulCreatePod", f"Created pod {action.name}", ""))
            elif isinstance(action, DeletePod):
                if kube.delete_pod(ref.namespace, action.name, action.grace_seconds):
                    CHILDREN_DELETED.labels("Pod", action.role).inc()
                    notes.append(
                        ("SuccessfulDeletePod", f"Deleted pod {action.name}", action.reason)
                    )
            elif isinstance(action, DeleteJob):
                logger.info(f"Deleting the job: {action.reason}")
                kube.delete_job(ref.namespace, ref.name)
        except KubeError as exc:
            failures.append(str(exc))
    for reason, message, why in notes:
        logger.info(f"{message}" + (f" reason={why}" if why else ""))
        _post(kube, involved, reason, message + (f" ({why})" if why else ""), "Normal", logger)
    for event in plan.events:
        _post(kube, involved, event.reason, event.message, event.type, logger)
    return failures


def _post(
    kube: Kube,
    involved: Mapping[str, str],
    reason: str,
    message: str,
    type_: str,
    logger: Logger,
) -> None:
    try:
        kube.create_event(involved, reason, message, type_)
    except KubeError as exc:  # events are best effort
        logger.debug(f"Could not post event reason={reason}: {exc}")


def reconcile_job(
    kube: Kube,
    namespace: str,
    name: str,
    logger: Logger,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    scrape: Scraper = rank0_metrics,
) -> Plan | None:
    """One level-based pass over one job; None when the job is gone or being deleted.

    Raises kopf.TemporaryError when the API fails (kopf retries after a delay).
    """
    started = time.monotonic()
    result = "error"
    try:
        body = kube.get_job(namespace, name)
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("deletionTimestamp"):
            result = "skipped"
            return None
        ref = JobRef(name, namespace, str(meta.get("uid", "")), int(meta.get("generation") or 0))
        with _lock(ref.uid):
            plan = _pass(kube, ref, body, logger, now, scrape)
            if any(isinstance(a, CreateService) for a in plan.actions):
                # The new Service's cluster IP is what the workers need: go on at once.
                body = kube.get_job(namespace, name) or body
                plan = _pass(kube, ref, body, logger, now, scrape)
        invalid = plan.status.get("phase") == "Failed" and any(
            c.get("type") == "Failed" and c.get("reason") == REASON_INVALID
            for c in plan.status.get("conditions") or []
        )
        result = "invalid" if invalid else "success"
        return plan
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
    finally:
        RECONCILE_TOTAL.labels(KIND, result).inc()
        RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)


def _pass(
    kube: Kube,
    ref: JobRef,
    body: Mapping[str, Any],
    logger: Logger,
    now: Callable[[], datetime],
    scrape: Scraper,
) -> Plan:
    selector = children_selector(ref.name)
    pods = [observe_pod(p) for p in _owned(kube.list_pods(ref.namespace, selector), ref.uid)]
    services = [
        observe_service(s) for s in _owned(kube.list_services(ref.namespace, selector), ref.uid)
    ]
    status = dict(body.get("status") or {})
    job = parse_job(body)
    metrics = None
    if isinstance(job, LMTrainingJob) and status.get("phase") not in TERMINAL_PHASES:
        metrics = _metrics_of(pods, scrape)
    plan = reconcile(ref, job, status, Observed(pods, services, metrics), now())
    patch = status_patch(status, plan.status)
    if patch:
        # Status first: a failure counted here is never counted again, even if an action
        # below fails and the pass is retried.
        kube.patch_job_status(ref.namespace, ref.name, patch)
    if plan.scaled:
        SCALING_ACTIONS.labels(plan.scaled).inc()
    failures = _apply(kube, ref, plan, logger)
    if failures:
        raise KubeError("; ".join(failures), 0, "")
    return plan


def _kube(memo: Any) -> Kube:
    kube = getattr(memo, "kube", None)
    if not isinstance(kube, Kube):
        raise kopf.TemporaryError("the API client is not configured yet", delay=1)
    return kube


def _on_change(memo: Any, namespace: str, name: str, logger: Logger) -> None:
    """Reconcile at once; an invalid spec also fails the handler (kopf logs it)."""
    plan = reconcile_job(_kube(memo), namespace, name, logger)
    if plan is None:
        return
    if plan.status.get("phase") != "Failed":
        return
    for condition in plan.status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("reason") == REASON_INVALID:
            raise kopf.PermanentError(f"The spec is invalid: {condition.get('message')}")


@kopf.on.create(GROUP, VERSION, TRAINING_JOBS)
def created(memo: Any, namespace: str | None, name: str, logger: Logger, **_: Any) -> None:
    _on_change(memo, namespace or "default", name, logger)


@kopf.on.resume(GROUP, VERSION, TRAINING_JOBS)
def resumed(memo: Any, namespace: str | None, name: str, logger: Logger, **_: Any) -> None:
    # No PermanentError here: an invalid job was reported when it was created or changed.
    reconcile_job(_kube(memo), namespace or "default", name, logger)


@kopf.on.update(GROUP, VERSION, TRAINING_JOBS, field="spec")
def updated(memo: Any, namespace: str | None, name: str, logger: Logger, **_: Any) -> None:
    _on_change(memo, namespace or "default", name, logger)


@kopf.timer(GROUP, VERSION, TRAINING_JOBS, interval=TIMER_INTERVAL_SECONDS, sharp=False)
def tick(memo: Any, namespace: str | None, name: str, logger: Logger, **_: Any) -> None:
    """Level-based resync: children's changes, metrics, deadlines and TTLs."""
    reconcile_job(_kube(memo), namespace or "default", name, logger)
