"""kopf handlers of LMTrainingJob: every trigger runs the same pass, `reconcile_job`.

Triggers: the job's creation, a change of its spec, the operator's start (resume), an
event of one of its children (handlers/children.py), a timer while the job is not
finished (it scrapes rank 0's metrics first, outside the job's lock), and, for a
finished job with ttlSecondsAfterFinished, one sleeping daemon that wakes when the TTL
ends. A finished job without a TTL costs no API request at all.

A pass takes the job's lock, then reads the job and its children from kopf's indexes
(no GET, no LIST), asks the pure core (reconcile/trainingjob.py) for a plan, writes the
status (progress at most every PROGRESS_WRITE_SECONDS) and carries the plan out. An
invalid spec becomes a Failed/Invalid status; API failures a kopf.TemporaryError.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from lmoperator.api import InvalidResourceError, LMTrainingJob, kinds, parse_resource
from lmoperator.api.common import MAX_SCALING_HISTORY
from lmoperator.api.trainingjob import AutoscalingPolicy, TrainingConditionType
from lmoperator.autoscale import jobloop
from lmoperator.autoscale.jobloop import (
    EVENT_AUTOSCALED,
    EVENT_BACKOFF,
    EVENT_BLIND,
    REASON_AUTOSCALING_OFF,
    REASON_MEASURING,
)
from lmoperator.builders.defaults import Defaults, with_defaults
from lmoperator.builders.pods import INDEX_LABEL
from lmoperator.builders.trainingjob import ROLE_WORKER, rdzv_secret_name
from lmoperator.handlers import common
from lmoperator.handlers.children import (
    NETWORK_POLICIES_INDEX,
    PODS_INDEX,
    SERVICES_INDEX,
    register_owner_pass,
)
from lmoperator.kube import KubeApi, KubeError
from lmoperator.operator_metrics import (
    AUTOSCALER_DECISIONS,
    RECONCILE_DURATION,
    RECONCILE_TOTAL,
    SCALING_ACTIONS,
)
from lmoperator.reconcile import children
from lmoperator.reconcile.children import Plan
from lmoperator.reconcile.conditions import Conditions, parse_time
from lmoperator.reconcile.trainingjob import (
    PROGRESS_FIELDS,
    REASON_INVALID,
    TERMINAL_PHASES,
    Observed,
    job_ref,
    observe_job_pod,
    problems_of,
    reconcile,
)
from lmoperator.scrape import promote_spare
from lmoperator.worker_metrics import WorkerMetrics
from lmworker.config import SECRET_KEY

KIND = kinds.TRAINING_JOB
# How often a running job's metrics are scraped. status.step then trails the workers by
# at most about this (plus one write interval of reconcile/status.py, 4 s), within the
# 10 s promised; activeDeadlineSeconds is checked as often. Everything else (children,
# failures, scaling) is event-driven and does not wait for it. Each progress write is a
# PATCH and a watch event for every watcher of the job, so this interval is most of a
# running job's cost; 8 s cut the operator's CPU at 500 jobs by about a third, but a
# short run then showed no figures at all between two scrapes.
METRICS_INTERVAL_SECONDS = 5.0
# While a job starts or changes shape, its world size is what users watch for.
FAST_PHASES = frozenset({"Pending", "Scaling", "Restarting"})
FAST_INTERVAL_SECONDS = 1.0
JOBS_INDEX = "lmtrainingjob_bodies"


def parse_job(body: Mapping[str, Any]) -> LMTrainingJob | InvalidResourceError:
    """The typed job, or why it is invalid. The status is the operator's, not validated."""
    return _parsed(_model_input(body), common.pod_defaults())[0]


def _model_input(body: Mapping[str, Any]) -> str:
    doc = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    meta = dict(doc.get("metadata") or {})
    # Only what the model reads; server-set fields (managedFields, ...) stay out of it.
    doc["metadata"] = {
        k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
    }
    return json.dumps(doc, sort_keys=True, default=str)


@functools.lru_cache(maxsize=2048)
def _parsed(
    text: str, defaults: Defaults
) -> tuple[LMTrainingJob | InvalidResourceError, list[str]]:
    """The typed job (the admin's pod defaults under its spec.worker) and its problems,
    once per distinct spec: most passes see the same spec again, and parsing and
    checking it is most of a pass's work. Nothing mutates the cached model."""
    job = _parse(json.loads(text))
    if isinstance(job, LMTrainingJob):
        job = with_defaults(job, defaults)
    return job, problems_of(job)


def _parse(doc: Mapping[str, Any]) -> LMTrainingJob | InvalidResourceError:
    try:
        resource = parse_resource(doc)
    except InvalidResourceError as exc:
        return exc
    if not isinstance(resource, LMTrainingJob):
        return InvalidResourceError(KIND.kind, [f"kind: must be {KIND.kind}"])
    return resource


def ready_workers(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Ready workers' (pod name, pod IP) in index order (rank 0 is first, nearly always)."""
    observed = [observe_job_pod(p) for p in pods]
    ready = sorted(
        (p for p in observed if p.role == ROLE_WORKER and p.ready and p.ip and not p.deleting),
        key=lambda p: p.index or 0,
    )
    return [(p.name, p.ip) for p in ready if p.ip]


def ready_worker_ips(pods: list[dict[str, Any]]) -> list[str]:
    """Ready workers' pod IPs in index order (rank 0 is first there, nearly always)."""
    return [ip for _, ip in ready_workers(pods)]


class JobAutoscale:
    """A job's autoscaler in memory: the loop's state and the last scrape of every worker."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loop = jobloop.JobAutoscalerState()
        self.scrape: dict[str, WorkerMetrics | None] = {}
        self.scraped_at: float | None = None


def _autoscale_holder(state: common.ObjectState, key: str | None) -> JobAutoscale | None:
    """The job's JobAutoscale for this autoscaling spec (None: autoscaling is off); a
    changed spec keeps what was written and the observations, not the decision times."""
    holder = state.autoscale if isinstance(state.autoscale, JobAutoscale) else None
    if key is None:
        state.autoscale = None
        return None
    if holder is None:
        holder = JobAutoscale(key)
    elif holder.key != key:
        holder.key = key
        holder.loop.last_decided_at = None
        holder.loop.backoff_until = None
    state.autoscale = holder
    return holder


def reconcile_job(
    kube: KubeApi,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    logger: common.Logger,
    *,
    wait: bool = True,
    scraped: bool = False,
    metrics: WorkerMetrics | None = None,
    worker_scrape: Mapping[str, WorkerMetrics | None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan | None:
    """One level-based pass over one job; None when the job is gone or being deleted, or
    (wait=False) when a pass already under way will cover this one.

    `indexes` holds kopf's indexes by name (the job's and its children's). With
    `scraped`, `metrics` is a fresh scrape of rank 0 (None: no ready rank 0 answered);
    otherwise the last scrape is used. `worker_scrape` is a fresh scrape of every ready
    worker by pod name (taken with autoscaling on); a scraped pass runs the autoscaler.
    Raises kopf.TemporaryError when the API fails (kopf retries after a delay).
    """
    body = common.latest(indexes[JOBS_INDEX], (namespace, KIND.kind, name))
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if not uid:
        return None
    state = common.STATES.get(uid)
    if scraped:
        state.metrics = metrics
        if worker_scrape is not None and isinstance(state.autoscale, JobAutoscale):
            state.autoscale.scrape = dict(worker_scrape)
            state.autoscale.scraped_at = now().timestamp()

    def one_pass() -> Plan | None:
        return _pass(kube, namespace, name, indexes, state, logger, now, autoscale=scraped)

    plan = common.run_exclusive(state, one_pass, wait)
    waking = not scraped and plan is not None and plan.status.get("phase") in FAST_PHASES
    if waking and state.wake is not None:
        state.wake.set()  # the metrics loop scrapes now, not at its next interval
    return plan


def _pass(
    kube: KubeApi,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    state: common.ObjectState,
    logger: common.Logger,
    now: Callable[[], datetime],
    autoscale: bool = False,
) -> Plan | None:
    """One pass; `autoscale`: a fresh scrape came with it, so the autoscaler decides."""
    started = time.monotonic()
    result = "error"
    try:
        # Read under the lock: a pass that waited for it sees what the last one wrote.
        body = common.latest(indexes[JOBS_INDEX], (namespace, KIND.kind, name))
        meta = body.get("metadata") or {}
        if not body or meta.get("deletionTimestamp"):
            result = "skipped"
            return None
        ref = job_ref(name, namespace, str(meta.get("uid", "")), int(meta.get("generation") or 0))
        status = common.current_status(state, body)
        pods = common.children_of(ref, state, kinds.POD, indexes[PODS_INDEX])
        services = common.children_of(ref, state, kinds.K8S_SERVICE, indexes[SERVICES_INDEX])
        policies = common.children_of(
            ref, state, kinds.NETWORK_POLICY, indexes[NETWORK_POLICIES_INDEX]
        )
        job, problems = _parsed(_model_input(body), common.pod_defaults())
        running = isinstance(job, LMTrainingJob) and status.get("phase") not in TERMINAL_PHASES
        observed = Observed(
            pods=[observe_job_pod(p) for p in pods],
            services=[children.observe_service(s) for s in services],
            network_policies=[children.observe_object(n) for n in policies],
            metrics=state.metrics if running else None,
        )
        moment = now()
        outcome, autoscaled_to = None, None
        if running and isinstance(job, LMTrainingJob) and not problems:
            job, outcome, autoscaled_to = _autoscale(
                kube, ref, job, state, pods, status, moment, decide=autoscale
            )
        else:
            state.autoscale = None
        plan = reconcile(
            ref,
            job,
            status,
            observed,
            moment,
            list(problems),
            autoscaled_to=autoscaled_to,
            peers=common.network_peers(),
        )
        if outcome is not None:
            _record(plan, outcome, moment, ref.generation)
        elif isinstance(job, LMTrainingJob) and job.spec.autoscaling.policy == "None":
            _autoscaling_off(plan, moment, ref.generation)
        if plan.scaled:
            SCALING_ACTIONS.labels(plan.scaled).inc()
        if plan.status.get("countedFailures") != status.get("countedFailures"):
            # Status first: a failure counted here is never counted again, even if an
            # action below fails and the pass is retried.
            common.write_status(kube, ref, state, status, plan.status, PROGRESS_FIELDS)
            common.apply_plan(kube, ref, state, plan, logger)
            _promote(kube, ref, state, plan, logger)
        else:
            # Nothing to count: the new pods of a scale-up need not wait for the status
            # write's round trip.
            common.apply_plan(kube, ref, state, plan, logger)
            _promote(kube, ref, state, plan, logger)
            common.write_status(kube, ref, state, status, plan.status, PROGRESS_FIELDS)
        invalid = plan.status.get("phase") == "Failed" and any(
            c.get("type") == "Failed" and c.get("reason") == REASON_INVALID
            for c in plan.status.get("conditions") or []
        )
        result = "invalid" if invalid else "success"
        return plan
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=common.RETRY_DELAY_SECONDS) from exc
    finally:
        RECONCILE_TOTAL.labels(KIND.kind, result).inc()
        RECONCILE_DURATION.labels(KIND.kind).observe(time.monotonic() - started)


def _rdzv_token(kube: KubeApi, ref: children.OwnerRef, state: common.ObjectState) -> bytes:
    """The job's rendezvous token (its Secret's `token`), read once and remembered."""
    if state.rdzv_token is None:
        name = rdzv_secret_name(ref.name)
        secret = kube.get(kinds.SECRET, ref.namespace, name)
        encoded = ((secret or {}).get("data") or {}).get(SECRET_KEY)
        if not encoded:
            raise KubeError(f"secret {ref.namespace}/{name}", 404, f"no {SECRET_KEY!r} key yet")
        try:
            state.rdzv_token = base64.b64decode(encoded, validate=True).strip()
        except (binascii.Error, ValueError) as exc:
            raise KubeError(f"secret {ref.namespace}/{name}", 0, f"{SECRET_KEY}: {exc}") from exc
    return state.rdzv_token


def _promote(
    kube: KubeApi, ref: children.OwnerRef, state: common.ObjectState, plan: Plan, logger: Any
) -> None:
    """Give the plan's promotion orders to the spares (relabelled already). An order that
    does not arrive is repeated by a later pass while the pod does not train."""
    if not plan.promotions:
        return
    token = _rdzv_token(kube, ref, state)
    for order in plan.promotions:
        problem = promote_spare(order.ip, token, order.index, order.expected)
        if problem is None:
            logger.info(f"Promoted spare pod={order.pod} index={order.index}")
        else:
            logger.warning(
                f"Could not promote spare pod={order.pod} index={order.index}: {problem}"
            )
            if "HTTP 401" in problem:
                state.rdzv_token = None  # the Secret was replaced: read it again


def _autoscale(
    kube: KubeApi,
    ref: Any,
    job: LMTrainingJob,
    state: common.ObjectState,
    pods: list[dict[str, Any]],
    status: Mapping[str, Any],
    moment: datetime,
    *,
    decide: bool,
) -> tuple[LMTrainingJob, jobloop.JobOutcome | None, int | None]:
    """Run the job's autoscaler (decide=True) and write its decision to spec.replicas
    through the scale subresource. Returns the job with the replicas this pass acts on,
    the outcome to record, and the replicas the autoscaler wrote (when the job's
    spec.replicas is its write, so the reconciler does not record it as manual)."""
    spec = job.spec
    autoscaling = spec.autoscaling
    if autoscaling.policy == AutoscalingPolicy.NONE or spec.run_policy.suspend:
        _autoscale_holder(state, None)
        return job, None, None
    lo = spec.elastic.min_replicas
    hi = spec.elastic.max_replicas if spec.elastic.max_replicas is not None else spec.replicas
    holder = _autoscale_holder(state, jobloop.spec_key(autoscaling, lo, hi))
    assert holder is not None
    auto = holder.loop
    replicas = jobloop.effective_replicas(auto, spec.replicas, ref.generation)
    outcome = None
    if decide:
        workers = [p for p in pods if observe_job_pod(p).role == ROLE_WORKER]
        reports = jobloop.worker_reports(
            workers,
            holder.scrape,
            holder.scraped_at,
            INDEX_LABEL,
            processes_per_pod=spec.worker.processes_per_pod,
        )
        outcome = jobloop.decide(
            auto,
            autoscaling,
            min_workers=lo,
            max_workers=hi,
            spec_replicas=spec.replicas,
            generation=ref.generation,
            workers=reports,
            history=status.get("scalingHistory") or [],
            now=moment.timestamp(),
            scrape_interval=METRICS_INTERVAL_SECONDS,
        )
        if outcome is not None:
            d = outcome.decision
            AUTOSCALER_DECISIONS.labels(KIND.kind, d.direction, d.reason.value).inc()
            target = outcome.scale_to
            if target is not None:
                written = kube.patch(
                    KIND, ref.namespace, ref.name, {"spec": {"replicas": target}}, "scale"
                )
                generation = ((written or {}).get("metadata") or {}).get("generation")
                after = generation if isinstance(generation, int) else ref.generation + 1
                jobloop.wrote(auto, target, max(after, ref.generation + 1))
                replicas = target
    if replicas != spec.replicas:
        job = job.model_copy(update={"spec": spec.model_copy(update={"replicas": replicas})})
    # The autoscaler's own write: the body has not moved past it (a later generation is
    # someone else's change, even back to the same count).
    own = auto.written_replicas == replicas and ref.generation <= auto.written_generation
    return job, outcome, replicas if own else None


def _record(plan: Plan, outcome: jobloop.JobOutcome, now: datetime, generation: int) -> None:
    """The outcome into the plan: status.scalingHistory, ScalingActive and the Events."""
    status = plan.status
    d = outcome.decision
    if outcome.entry is not None:
        history = [*(status.get("scalingHistory") or []), outcome.entry]
        status["scalingHistory"] = history[-MAX_SCALING_HISTORY:]
    conditions = Conditions(status.get("conditions"), now, generation)
    # Spelt out so that docs/troubleshooting.md's test finds every reason.
    reason = (
        REASON_MEASURING
        if outcome.active
        else "TooFewReports"
        if d.reason == "TooFewReports"
        else "NoReadyPods"
        if d.reason == "NoReadyPods"
        else "NoMetrics"
    )
    message = (
        "The autoscaler decides from the workers' measured tokens/s" if outcome.active
        else d.message
    )  # fmt: skip
    flipped = conditions.set(TrainingConditionType.SCALING_ACTIVE, outcome.active, reason, message)
    status["conditions"] = conditions.to_list()
    if flipped and reason in ("TooFewReports", "NoMetrics"):
        plan.event(EVENT_BLIND, f"Autoscaling holds: {message}", warning=True)
    if d.desired != d.current:
        if outcome.backoff_started:
            plan.event(
                EVENT_BACKOFF,
                f"Scaling from {d.current} to {d.desired}: {d.message}",
                warning=True,
            )
        else:
            plan.event(EVENT_AUTOSCALED, f"Scaling from {d.current} to {d.desired}: {d.message}")


def _autoscaling_off(plan: Plan, now: datetime, generation: int) -> None:
    """autoscaling.policy is None: ScalingActive, if an earlier spec set it, turns False."""
    conditions = Conditions(plan.status.get("conditions"), now, generation)
    conditions.clear(
        TrainingConditionType.SCALING_ACTIVE,
        REASON_AUTOSCALING_OFF,
        "spec.autoscaling.policy is None: spec.replicas is set by hand",
    )
    plan.status["conditions"] = conditions.to_list()


def _child_event_pass(
    memo: Any, namespace: str, name: str, kwargs: Mapping[str, Any], logger: common.Logger
) -> None:
    try:
        reconcile_job(common.kube_of(memo), namespace, name, kwargs, logger, wait=False)
    except kopf.TemporaryError as exc:
        # Event handlers are not retried: the job's own timer or next event will be.
        logger.warning(f"Reconciling {KIND.singular} {name} after a child's event failed: {exc}")


register_owner_pass(KIND, _child_event_pass)


# --------------------------------------------------------------------------------------
# The handlers


def _is_running(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


def _expires(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    run_policy = spec.get("runPolicy") or {}
    return (
        status.get("phase") in TERMINAL_PHASES
        and run_policy.get("ttlSecondsAfterFinished") is not None
    )


def _on_change(memo: Any, namespace: str, name: str, kwargs: Mapping[str, Any]) -> None:
    """Reconcile at once; an invalid spec also fails the handler (kopf logs it)."""
    plan = reconcile_job(common.kube_of(memo), namespace, name, kwargs, kwargs["logger"])
    if plan is not None:
        common.refuse_invalid(plan.status, "Failed", REASON_INVALID)


@kopf.index(KIND.group, KIND.version, KIND.plural)
def lmtrainingjob_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[common.OwnerKey, dict[str, Any]]:
    return common.owner_index_entry(KIND, namespace, name, body)


@kopf.on.create(KIND.group, KIND.version, KIND.plural)
def created(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    _on_change(memo, namespace or "default", name, kwargs)


@kopf.on.update(KIND.group, KIND.version, KIND.plural, field="spec")
def updated(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    _on_change(memo, namespace or "default", name, kwargs)


@kopf.on.resume(KIND.group, KIND.version, KIND.plural)
def resumed(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    # No PermanentError here: an invalid job was reported when it was created or changed.
    reconcile_job(common.kube_of(memo), namespace or "default", name, kwargs, kwargs["logger"])


@kopf.on.event(KIND.group, KIND.version, KIND.plural, when=common.is_deletion)
def forget_deleted(event: Mapping[str, Any], uid: str | None, **_: Any) -> None:
    common.forget_deleted_object(event, uid)


@kopf.daemon(KIND.group, KIND.version, KIND.plural, when=_is_running, cancellation_timeout=2.0)
async def follow_metrics(
    stopped: kopf.DaemonStopped,
    memo: Any,
    namespace: str | None,
    name: str,
    uid: str | None,
    **kwargs: Any,
) -> None:
    """Scrape rank 0 and run a pass, every METRICS_INTERVAL_SECONDS while the job runs.

    While it starts or changes shape (FAST_PHASES) with workers ready, every
    FAST_INTERVAL_SECONDS instead, and a pass triggered by an event in such a phase
    wakes the loop at once: the new world size shows in the status about a second after
    the workers form it. kopf stops the loop when the job finishes (`when=`).
    """
    namespace = namespace or "default"
    state = common.STATES.get(uid or "")
    state.wake = waker = common.Waker()
    key = (namespace, KIND.kind, name)
    while common.loop_goes_on(stopped):
        workers = ready_workers(common.latest_children(kwargs[PODS_INDEX], key))
        ips = [ip for _, ip in workers]
        worker_scrape: dict[str, WorkerMetrics | None] | None = None
        if isinstance(state.autoscale, JobAutoscale):
            # The autoscaler needs every worker's report ("too few reports" holds it).
            scraped = await asyncio.gather(*(memo.scraper.worker(ip) for ip in ips))
            worker_scrape = {n: m for (n, _), m in zip(workers, scraped, strict=True)}
            metrics = next((m for m in scraped if m is not None and m.rank == 0), None)
        else:
            metrics = await memo.scraper.rank0(ips)
        plan = await asyncio.to_thread(
            reconcile_job,
            common.kube_of(memo),
            namespace,
            name,
            kwargs,
            kwargs["logger"],
            scraped=True,
            metrics=metrics,
            worker_scrape=worker_scrape,
        )
        phase = plan.status.get("phase") if plan is not None else None
        if plan is None or phase in TERMINAL_PHASES:
            return
        fast = phase in FAST_PHASES and bool(ips)
        await waker.wait(stopped, FAST_INTERVAL_SECONDS if fast else METRICS_INTERVAL_SECONDS)


@kopf.daemon(KIND.group, KIND.version, KIND.plural, when=_expires, cancellation_timeout=1.0)
async def delete_after_ttl(
    stopped: kopf.DaemonStopped,
    memo: Any,
    namespace: str | None,
    name: str,
    **kwargs: Any,
) -> None:
    """Sleep until ttlSecondsAfterFinished has passed, then let a pass delete the job."""
    namespace = namespace or "default"
    while common.loop_goes_on(stopped):
        body = common.latest(kwargs[JOBS_INDEX], (namespace, KIND.kind, name))
        ttl = ((body.get("spec") or {}).get("runPolicy") or {}).get("ttlSecondsAfterFinished")
        completed = parse_time((body.get("status") or {}).get("completionTime"))
        if not isinstance(ttl, int) or completed is None:
            return
        due = completed + timedelta(seconds=ttl)
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await stopped.wait(wait + 0.5)  # completionTime has whole seconds
            continue
        kube = common.kube_of(memo)
        await asyncio.to_thread(reconcile_job, kube, namespace, name, kwargs, kwargs["logger"])
        await stopped.wait(common.RETRY_DELAY_SECONDS)
