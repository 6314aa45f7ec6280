"""kopf handlers of LMService: every trigger runs the same pass, `reconcile_service`.

Triggers: the service's creation, a change of its spec, the operator's start (resume),
an event of one of its children (the Deployment, its Service, its server pods: see
handlers/children.py), and a loop per service (a kopf daemon) that scrapes the server
pods' load and readiness, every SCRAPE_INTERVAL_SECONDS, or every second while a rollout
or a start is under way. The loop also notices what the service depends on outside its
children: the LMTrainingJob it serves from finishing (it then rolls to the job's export)
or writing its first checkpoint.

A scale-down scrapes first, so that the pods' deletion costs rank their current load.

With `spec.autoscaling`, each of the loop's passes also runs the service's autoscaler
(autoscale/loop.py) on that scrape: a decision to scale is written to the LMService's
own spec.replicas through its scale subresource, and the same pass scales the
Deployment (deletion costs first on a scale-down). Passes for other triggers do not
decide, so the policy's windows see one sample per scrape. With source Prometheus the
loop also sends the autoscaler's queries, concurrently with the pods' scrapes. The load
history is read from the ConfigMap NAME-autoscaler-history on the first deciding pass of
this process and written to it when a minute closes (autoscale/history.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from lmoperator.api import InvalidResourceError, LMService, kinds, parse_resource
from lmoperator.api.common import MAX_SCALING_HISTORY
from lmoperator.api.service import MetricsSource, ServiceConditionType
from lmoperator.autoscale import history as autoscale_history
from lmoperator.autoscale import loop as autoscale_loop
from lmoperator.autoscale.loop import (
    EVENT_AUTOSCALED,
    EVENT_BLIND,
    EVENT_HISTORY_UNAVAILABLE,
    EVENT_MANUAL,
    EVENT_METRIC_UNAVAILABLE,
    REASON_AUTOSCALING_OFF,
    REASON_INVALID_POLICY,
    REASON_METRICS_AVAILABLE,
    REASON_NO_METRICS,
    REASON_NO_READY_PODS,
    REASON_TOO_FEW_REPORTS,
)
from lmoperator.autoscale.policy import Reason, Signal
from lmoperator.autoscale.sources import prometheus
from lmoperator.builders.defaults import Defaults, with_defaults
from lmoperator.builders.pods import owner_reference
from lmoperator.builders.service import SERVICE_LABEL, deployment_name
from lmoperator.handlers import common
from lmoperator.handlers.children import (
    DEPLOYMENTS_INDEX,
    PDBS_INDEX,
    PODS_INDEX,
    SERVICES_INDEX,
    register_owner_label,
    register_owner_pass,
)
from lmoperator.handlers.trainingjob import JOBS_INDEX
from lmoperator.kube import KubeApi, KubeError
from lmoperator.operator_metrics import (
    AUTOSCALER_DECISIONS,
    AUTOSCALER_METRIC_PROBLEMS,
    RECONCILE_DURATION,
    RECONCILE_TOTAL,
    SCALING_ACTIONS,
)
from lmoperator.reconcile import children
from lmoperator.reconcile.children import Plan
from lmoperator.reconcile.conditions import Conditions, rfc3339
from lmoperator.reconcile.service import (
    REASON_INVALID,
    NotReady,
    Observed,
    ServedModel,
    is_server_pod,
    observe_server_pod,
    pod_deletion_cost,
    problems_of,
    reconcile,
    service_ref,
)
from lmoperator.server_metrics import Readiness, ServerLoad

KIND = kinds.SERVICE
SERVICES_BODIES_INDEX = "lmservice_bodies"
SCRAPE_INTERVAL_SECONDS = 5.0
FAST_INTERVAL_SECONDS = 1.0
FAST_PHASES = frozenset({"Pending", "Loading", "Degraded"})


class ServerScrape:
    """The last scrape of a service's server pods, by pod name."""

    def __init__(self, taken_at: float | None = None) -> None:
        self.loads: dict[str, ServerLoad] = {}
        self.readiness: dict[str, Readiness] = {}
        self.taken_at = taken_at  # seconds since the epoch
        # Source Prometheus: each metric's query and answer, and when the answers came.
        self.queries: dict[Signal, str] = {}
        self.answers: dict[Signal, prometheus.Answer] = {}
        self.answered_at: float | None = None

    @property
    def in_flight(self) -> dict[str, int]:
        return {
            name: load.in_flight for name, load in self.loads.items() if load.in_flight is not None
        }

    def observed(self) -> tuple[dict[str, int], dict[str, NotReady], ServedModel | None]:
        not_ready = {
            name: NotReady(r.state, r.message)
            for name, r in self.readiness.items()
            if not r.ready and r.state != "draining"
        }
        served = next(
            (
                ServedModel(r.precision, r.perplexity_before, r.perplexity_after)
                for r in self.readiness.values()
                if r.ready
            ),
            None,
        )
        return dict(self.in_flight), not_ready, served


def parse_service(body: Mapping[str, Any]) -> LMService | InvalidResourceError:
    return _parsed(_model_input(body), common.pod_defaults())[0]


def _model_input(body: Mapping[str, Any]) -> str:
    doc = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    meta = dict(doc.get("metadata") or {})
    doc["metadata"] = {
        k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
    }
    return json.dumps(doc, sort_keys=True, default=str)


@functools.lru_cache(maxsize=1024)
def _parsed(text: str, defaults: Defaults) -> tuple[LMService | InvalidResourceError, list[str]]:
    """The typed service (the admin's pod defaults under its spec.worker) and its
    problems, once per distinct spec."""
    try:
        resource = parse_resource(json.loads(text))
    except InvalidResourceError as exc:
        return exc, problems_of(exc)
    if not isinstance(resource, LMService):
        invalid = InvalidResourceError(KIND.kind, [f"kind: must be {KIND.kind}"])
        return invalid, problems_of(invalid)
    resource = with_defaults(resource, defaults)
    return resource, problems_of(resource)


def server_pods(indexes: Mapping[str, Any], namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in common.latest_children(indexes[PODS_INDEX], (namespace, KIND.kind, name))
        if is_server_pod(p)
    ]


def reconcile_service(
    kube: KubeApi,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    logger: common.Logger,
    *,
    wait: bool = True,
    scrape: ServerScrape | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan | None:
    """One level-based pass over one service; None when it is gone or being deleted, or
    (wait=False) when a pass already under way will cover this one.

    Raises kopf.TemporaryError when the API fails (kopf retries after a delay).
    """
    body = common.latest(indexes[SERVICES_BODIES_INDEX], (namespace, KIND.kind, name))
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if not uid:
        return None
    state = common.STATES.get(uid)
    if scrape is not None:
        state.metrics = scrape

    def one_pass() -> Plan | None:
        return _pass(kube, namespace, name, indexes, state, logger, now, scrape is not None)

    plan = common.run_exclusive(state, one_pass, wait)
    waking = scrape is None and plan is not None and plan.status.get("phase") in FAST_PHASES
    if waking and state.wake is not None:
        state.wake.set()  # the loop scrapes now, not at its next interval
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
        body = common.latest(indexes[SERVICES_BODIES_INDEX], (namespace, KIND.kind, name))
        meta = body.get("metadata") or {}
        if not body or meta.get("deletionTimestamp"):
            result = "skipped"
            return None
        ref = service_ref(
            name, namespace, str(meta.get("uid", "")), int(meta.get("generation") or 0)
        )
        status = common.current_status(state, body)
        service, problems = _parsed(_model_input(body), common.pod_defaults())
        deployments = common.children_of(ref, state, kinds.DEPLOYMENT, indexes[DEPLOYMENTS_INDEX])
        services = common.children_of(ref, state, kinds.K8S_SERVICE, indexes[SERVICES_INDEX])
        pdbs = common.children_of(ref, state, kinds.POD_DISRUPTION_BUDGET, indexes[PDBS_INDEX])
        pods = server_pods(indexes, namespace, name)
        job = None
        if isinstance(service, LMService) and service.spec.model.from_training_job is not None:
            job_name = service.spec.model.from_training_job.name
            job = common.latest(indexes[JOBS_INDEX], (namespace, kinds.TRAINING_JOB.kind, job_name))
        scrape = state.metrics if isinstance(state.metrics, ServerScrape) else ServerScrape()
        in_flight, not_ready, served = scrape.observed()
        live = {str((p.get("metadata") or {}).get("name")) for p in pods}
        observed = Observed(
            deployment=children.observe_object(deployments[0]) if deployments else None,
            service=next(
                (children.observe_service(s) for s in services if s["metadata"]["name"] == name),
                None,
            ),
            pdb=children.observe_object(pdbs[0]) if pdbs else None,
            pods=[observe_server_pod(p) for p in pods],
            deletion_cost={
                str(p["metadata"]["name"]): cost
                for p in pods
                if (cost := pod_deletion_cost(p)) is not None
            },
            training_job=job or None,
            in_flight={k: v for k, v in in_flight.items() if k in live},
            not_ready={k: v for k, v in not_ready.items() if k in live},
            served=served,
        )
        moment = now()
        outcome = None
        if isinstance(service, LMService) and not problems:
            service, outcome = _autoscale(
                kube, ref, service, state, pods, scrape, moment, decide=autoscale
            )
        else:
            state.autoscale = None
        plan = reconcile(ref, service, status, observed, moment, list(problems))
        if outcome is not None:
            _record(plan, outcome, moment, ref.generation)
        elif isinstance(service, LMService) and service.spec.autoscaling is None:
            _autoscaling_off(plan, moment, ref.generation)
        common.write_status(kube, ref, state, status, plan.status, frozenset())
        if plan.scaled:
            SCALING_ACTIONS.labels(plan.scaled).inc()
        common.apply_plan(kube, ref, state, plan, logger)
        invalid = plan.status.get("phase") == "Failed"
        result = "invalid" if invalid else "success"
        return plan
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=common.RETRY_DELAY_SECONDS) from exc
    finally:
        RECONCILE_TOTAL.labels(KIND.kind, result).inc()
        RECONCILE_DURATION.labels(KIND.kind).observe(time.monotonic() - started)


def _autoscale(
    kube: KubeApi,
    ref: Any,
    service: LMService,
    state: common.ObjectState,
    pods: list[dict[str, Any]],
    scrape: ServerScrape,
    moment: datetime,
    *,
    decide: bool,
) -> tuple[LMService, autoscale_loop.Outcome | None]:
    """Run the service's autoscaler (decide=True) and write its decision to spec.replicas;
    the service with the replicas this pass should scale the Deployment to."""
    autoscaling = service.spec.autoscaling
    if autoscaling is None:
        state.autoscale = None
        return service, None
    auto = autoscale_loop.autoscaler_state(state.autoscale, autoscaling, SCRAPE_INTERVAL_SECONDS)
    if auto is not state.autoscale and auto.history is not None:
        autoscale_loop.seed_forecaster(auto, moment)  # a new spec: a new policy
    state.autoscale = auto
    spec_replicas = service.spec.replicas
    replicas = autoscale_loop.effective_replicas(auto, spec_replicas, ref.generation)
    outcome = None
    if decide:
        source = autoscaling.source
        if source == MetricsSource.PROMETHEUS:
            reading = prometheus.read(pods, scrape.queries, scrape.answers, scrape.answered_at)
        else:
            wanted = frozenset(Signal(m.type.value) for m in autoscaling.metrics)
            reading = auto.pods_source.read(pods, scrape.loads, scrape.taken_at, wanted)
        if auto.history is None:
            _load_history(kube, ref, auto, moment)
        outcome = autoscale_loop.decide(
            auto,
            spec_replicas,
            ref.generation,
            reading.reports,
            moment,
            reading.problems,
            source.value,
        )
        for problem in outcome.problems:
            metric = str(problem.signal) if problem.signal is not None else "All"
            AUTOSCALER_METRIC_PROBLEMS.labels(
                KIND.kind, source.value, metric, problem.kind.value
            ).inc()
        d = outcome.decision
        if d is not None:
            AUTOSCALER_DECISIONS.labels(KIND.kind, d.direction, d.reason.value).inc()
        _save_history(kube, ref, auto, moment)
        if auto.history_problem:
            outcome = dataclasses.replace(outcome, history_problem=auto.history_problem)
            auto.history_problem = ""
        target = outcome.scale_to
        if target is not None:
            written = kube.patch(
                KIND, ref.namespace, ref.name, {"spec": {"replicas": target}}, "scale"
            )
            generation = ((written or {}).get("metadata") or {}).get("generation")
            after = generation if isinstance(generation, int) else ref.generation + 1
            autoscale_loop.wrote(auto, target, max(after, ref.generation + 1))
            replicas = target
    if replicas != spec_replicas:
        spec = service.spec.model_copy(update={"replicas": replicas})
        service = service.model_copy(update={"spec": spec})
    return service, outcome


def _load_history(
    kube: KubeApi, ref: Any, auto: autoscale_loop.AutoscalerState, moment: datetime
) -> None:
    """The metric history from the service's ConfigMap, once per operator process (an
    operator that restarts or takes over continues it). Unreadable: start afresh, say so."""
    name = autoscale_history.configmap_name(ref.name)
    try:
        found = kube.get(kinds.CONFIG_MAP, ref.namespace, name)
        loaded = autoscale_history.MetricHistory.from_data((found or {}).get("data"))
    except KubeError as exc:
        auto.history_problem = f"Could not read ConfigMap {name}: {exc}; starting a new history"
        loaded = autoscale_history.MetricHistory()
    except ValueError as exc:
        auto.history_problem = f"ConfigMap {name} is not readable ({exc}); it is overwritten"
        loaded = autoscale_history.MetricHistory()
    autoscale_loop.history_loaded(auto, loaded, moment)


def _save_history(
    kube: KubeApi, ref: Any, auto: autoscale_loop.AutoscalerState, moment: datetime
) -> None:
    """Write the history when a minute closed: a merge patch of the ConfigMap's data, or
    its creation (owned by the service, so it goes with it)."""
    data = autoscale_loop.history_to_write(auto, moment)
    if data is None:
        return
    name = autoscale_history.configmap_name(ref.name)
    try:
        written = kube.patch(kinds.CONFIG_MAP, ref.namespace, name, {"data": data})
        if written is None:
            manifest = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": ref.namespace,
                    "labels": {autoscale_history.HISTORY_LABEL: ref.name},
                    "ownerReferences": [owner_reference(KIND, ref.name, ref.uid)],
                },
                "data": data,
            }
            if kube.create(kinds.CONFIG_MAP, ref.namespace, manifest) is None:
                kube.patch(kinds.CONFIG_MAP, ref.namespace, name, {"data": data})  # raced
    except KubeError as exc:
        auto.history_problem = f"Could not write ConfigMap {name}: {exc}; retried next minute"
        return
    autoscale_loop.history_written(auto, moment)


def _record(plan: Plan, outcome: autoscale_loop.Outcome, now: datetime, generation: int) -> None:
    """The outcome into the plan: status.scalingHistory, ScalingActive, lastScaleTime, and
    the Events (each scale, each manual change seen, the loop going blind)."""
    status = plan.status
    if outcome.entries:
        history = [*(status.get("scalingHistory") or []), *outcome.entries]
        status["scalingHistory"] = history[-MAX_SCALING_HISTORY:]
    conditions = Conditions(status.get("conditions"), now, generation)
    blind = outcome.decision.reason if outcome.decision is not None else None
    # Spelt out (not outcome.condition_reason) so that docs/troubleshooting.md's test
    # finds every reason this condition can have.
    reason = (
        REASON_METRICS_AVAILABLE
        if outcome.active
        else REASON_INVALID_POLICY
        if blind is None
        else REASON_TOO_FEW_REPORTS
        if blind == Reason.TOO_FEW_REPORTS
        else REASON_NO_READY_PODS
        if blind == Reason.NO_READY_PODS
        else REASON_NO_METRICS
    )
    flipped = conditions.set(
        ServiceConditionType.SCALING_ACTIVE, outcome.active, reason, outcome.condition_message
    )
    status["conditions"] = conditions.to_list()
    if flipped and reason in (REASON_NO_METRICS, REASON_TOO_FEW_REPORTS, REASON_INVALID_POLICY):
        # Not NoReadyPods: every service starts that way while its model loads.
        plan.event(
            EVENT_BLIND,
            f"Autoscaling holds: {outcome.condition_message}",
            warning=True,
        )
    if outcome.history_problem:
        plan.event(EVENT_HISTORY_UNAVAILABLE, outcome.history_problem, warning=True)
    for problem in outcome.new_problems:
        plan.event(
            EVENT_METRIC_UNAVAILABLE,
            f"{problem.kind.value}: {problem.message}"[: autoscale_loop.MAX_REASON_CHARS],
            warning=True,
        )
    for entry in outcome.entries:
        if str(entry["reason"]).startswith("Manual:"):
            plan.event(EVENT_MANUAL, str(entry["reason"]))
    d = outcome.decision
    if d is not None and d.desired != d.current:
        status["lastScaleTime"] = rfc3339(now)
        plan.event(
            EVENT_AUTOSCALED,
            f"Scaling from {d.current} to {d.desired}: {d.message}",
        )


def _autoscaling_off(plan: Plan, now: datetime, generation: int) -> None:
    """spec.autoscaling is unset: ScalingActive, if an earlier spec set it, turns False."""
    conditions = Conditions(plan.status.get("conditions"), now, generation)
    conditions.clear(
        ServiceConditionType.SCALING_ACTIVE,
        REASON_AUTOSCALING_OFF,
        "spec.autoscaling is unset: spec.replicas is set by hand",
    )
    plan.status["conditions"] = conditions.to_list()


def _child_event_pass(
    memo: Any, namespace: str, name: str, kwargs: Mapping[str, Any], logger: common.Logger
) -> None:
    try:
        reconcile_service(common.kube_of(memo), namespace, name, kwargs, logger, wait=False)
    except kopf.TemporaryError as exc:
        logger.warning(f"Reconciling {KIND.singular} {name} after a child's event failed: {exc}")


register_owner_pass(KIND, _child_event_pass)
register_owner_label(SERVICE_LABEL, KIND)


def _prometheus_queries(
    body: Mapping[str, Any], namespace: str, name: str
) -> dict[Signal, tuple[str, str]]:
    """With source Prometheus, each metric's (Prometheus URL, query); else none."""
    service = parse_service(body)
    if not isinstance(service, LMService):
        return {}
    autoscaling = service.spec.autoscaling
    if (
        autoscaling is None
        or autoscaling.source != MetricsSource.PROMETHEUS
        or autoscaling.prometheus is None
    ):
        return {}
    url = autoscaling.prometheus.url
    return {
        signal: (url, query)
        for signal, query in prometheus.queries(
            autoscaling, namespace, deployment_name(name)
        ).items()
    }


async def scrape_servers(
    memo: Any, indexes: Mapping[str, Any], namespace: str, name: str, *, query: bool = True
) -> ServerScrape:
    """Every live server pod's load and readiness, and (`query`, with source Prometheus)
    the autoscaler's Prometheus queries, all concurrently."""
    body = common.latest(indexes[SERVICES_BODIES_INDEX], (namespace, KIND.kind, name))
    port = int(((body.get("spec") or {}).get("serving") or {}).get("port") or 8000)
    pods = [
        p
        for p in server_pods(indexes, namespace, name)
        if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
    ]
    queries = _prometheus_queries(body, namespace, name) if query else {}
    answers, prom_answers = await asyncio.gather(
        asyncio.gather(*(memo.scraper.server(p["status"]["podIP"], port) for p in pods)),
        asyncio.gather(*(memo.scraper.prometheus_query(url, q) for url, q in queries.values())),
    )
    scrape = ServerScrape(taken_at=time.time())
    if queries:
        scrape.queries = {signal: q for signal, (_, q) in queries.items()}
        scrape.answers = dict(zip(queries, prom_answers, strict=True))
        scrape.answered_at = scrape.taken_at
    for pod, (load, readiness) in zip(pods, answers, strict=True):
        pod_name = str(pod["metadata"]["name"])
        if load is not None:
            scrape.loads[pod_name] = load
        if readiness is not None:
            scrape.readiness[pod_name] = readiness
    return scrape


# --------------------------------------------------------------------------------------
# The handlers


def _on_change(memo: Any, namespace: str, name: str, kwargs: Mapping[str, Any]) -> None:
    plan = reconcile_service(common.kube_of(memo), namespace, name, kwargs, kwargs["logger"])
    if plan is not None:
        common.refuse_invalid(plan.status, "Ready", REASON_INVALID)


@kopf.index(KIND.group, KIND.version, KIND.plural)
def lmservice_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[common.OwnerKey, dict[str, Any]]:
    return common.owner_index_entry(KIND, namespace, name, body)


@kopf.on.create(KIND.group, KIND.version, KIND.plural)
def created(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    _on_change(memo, namespace or "default", name, kwargs)


@kopf.on.update(KIND.group, KIND.version, KIND.plural, field="spec")
async def updated(
    memo: Any, namespace: str | None, name: str, old: Any, new: Any, **kwargs: Any
) -> None:
    namespace = namespace or "default"
    uid = str((kwargs["body"].get("metadata") or {}).get("uid") or "")
    if _replicas(new) < _replicas(old) and uid:
        # Rank the pods by their load now, just before the Deployment picks victims.
        # Only the pods: this pass ranks them and does not decide.
        common.STATES.get(uid).metrics = await scrape_servers(
            memo, kwargs, namespace, name, query=False
        )
    await asyncio.to_thread(_on_change, memo, namespace, name, kwargs)


def _replicas(spec: Any) -> int:
    value = (spec or {}).get("replicas") if isinstance(spec, Mapping) else None
    return value if isinstance(value, int) else 1


@kopf.on.resume(KIND.group, KIND.version, KIND.plural)
def resumed(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    reconcile_service(common.kube_of(memo), namespace or "default", name, kwargs, kwargs["logger"])


@kopf.on.event(KIND.group, KIND.version, KIND.plural, when=common.is_deletion)
def forget_deleted(event: Mapping[str, Any], uid: str | None, **_: Any) -> None:
    common.forget_deleted_object(event, uid)


def _is_servable(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") != "Failed"


@kopf.daemon(KIND.group, KIND.version, KIND.plural, when=_is_servable, cancellation_timeout=2.0)
async def follow_servers(
    stopped: kopf.DaemonStopped,
    memo: Any,
    namespace: str | None,
    name: str,
    uid: str | None,
    **kwargs: Any,
) -> None:
    """Scrape the servers and run a pass, every SCRAPE_INTERVAL_SECONDS (every second
    while the service starts, rolls or waits for its model)."""
    namespace = namespace or "default"
    state = common.STATES.get(uid or "")
    state.wake = waker = common.Waker()
    while common.loop_goes_on(stopped):
        scrape = await scrape_servers(memo, kwargs, namespace, name)
        plan = await asyncio.to_thread(
            reconcile_service,
            common.kube_of(memo),
            namespace,
            name,
            kwargs,
            kwargs["logger"],
            scrape=scrape,
        )
        if plan is None or plan.status.get("phase") == "Failed":
            return
        fast = plan.status.get("phase") in FAST_PHASES
        await waker.wait(stopped, FAST_INTERVAL_SECONDS if fast else SCRAPE_INTERVAL_SECONDS)
