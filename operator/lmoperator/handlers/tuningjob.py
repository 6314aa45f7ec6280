"""kopf handlers of LMTuningJob: every trigger runs the same pass, `reconcile_search`.

Triggers: the search's creation, a change of its spec, the operator's start (resume),
and any event of one of its trials (an LMTrainingJob it controls: a status write with a
new validation loss, the trial's end). Nothing polls: a trial's progress arrives as its
own status writes. A pass takes the search's lock, reads the search and its trials from
kopf's indexes, asks the pure core (reconcile/tuningjob.py) for a plan, writes the status
and carries the plan out.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from lmoperator.api import InvalidResourceError, LMTuningJob, kinds, parse_resource
from lmoperator.handlers import common
from lmoperator.kube import KubeApi, KubeError
from lmoperator.operator_metrics import RECONCILE_DURATION, RECONCILE_TOTAL
from lmoperator.reconcile import children
from lmoperator.reconcile.children import Plan
from lmoperator.reconcile.tuningjob import (
    JOB_LABEL,
    REASON_INVALID,
    reconcile,
    tuning_ref,
)

KIND = kinds.TUNING_JOB
SEARCHES_INDEX = "lmtuningjob_bodies"
TRIALS_INDEX = "owned_trials"
# Every change is written at once: a search's status changes only when a trial starts,
# reports a checkpoint's objective or ends.
PROGRESS_FIELDS: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=512)
def _parsed(text: str) -> LMTuningJob | InvalidResourceError:
    try:
        resource = parse_resource(json.loads(text))
    except InvalidResourceError as exc:
        return exc
    if not isinstance(resource, LMTuningJob):
        return InvalidResourceError(KIND.kind, [f"kind: must be {KIND.kind}"])
    return resource


def parse_search(body: Mapping[str, Any]) -> LMTuningJob | InvalidResourceError:
    """The typed search, or why it is invalid (its status is the operator's)."""
    doc = {k: body.get(k) for k in ("apiVersion", "kind", "spec")}
    meta = body.get("metadata") or {}
    doc["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
    return _parsed(json.dumps(doc, sort_keys=True, default=str))


def reconcile_search(
    kube: KubeApi,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    logger: common.Logger,
    *,
    wait: bool = True,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan | None:
    """One level-based pass over one search; None when it is gone, or (wait=False) when
    a pass already under way will cover this one. Raises kopf.TemporaryError when the API
    fails."""
    body = common.latest(indexes[SEARCHES_INDEX], (namespace, KIND.kind, name))
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if not uid:
        return None
    state = common.STATES.get(uid)
    return common.run_exclusive(
        state, lambda: _pass(kube, namespace, name, indexes, state, logger, now), wait
    )


def _pass(
    kube: KubeApi,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    state: common.ObjectState,
    logger: common.Logger,
    now: Callable[[], datetime],
) -> Plan | None:
    started = time.monotonic()
    result = "error"
    try:
        body = common.latest(indexes[SEARCHES_INDEX], (namespace, KIND.kind, name))
        meta = body.get("metadata") or {}
        if not body or meta.get("deletionTimestamp"):
            result = "skipped"
            return None
        ref = tuning_ref(
            name, namespace, str(meta.get("uid", "")), int(meta.get("generation") or 0)
        )
        status = common.current_status(state, body)
        trials = common.children_of(ref, state, kinds.TRAINING_JOB, indexes[TRIALS_INDEX])
        job = parse_search(body)
        plan = reconcile(ref, job, status, [children.observe_object(t) for t in trials], now())
        # Status first: the trials it records are how a restarted operator knows them.
        common.write_status(kube, ref, state, status, plan.status, PROGRESS_FIELDS)
        common.apply_plan(kube, ref, state, plan, logger)
        invalid = any(
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


def _on_change(memo: Any, namespace: str, name: str, kwargs: Mapping[str, Any]) -> None:
    plan = reconcile_search(common.kube_of(memo), namespace, name, kwargs, kwargs["logger"])
    if plan is not None:
        common.refuse_invalid(plan.status, "Failed", REASON_INVALID)


@kopf.index(KIND.group, KIND.version, KIND.plural)
def lmtuningjob_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[common.OwnerKey, dict[str, Any]]:
    return common.owner_index_entry(KIND, namespace, name, body)


TRIAL_LABELS = {JOB_LABEL: kopf.PRESENT}


@kopf.index(
    kinds.TRAINING_JOB.group,
    kinds.TRAINING_JOB.version,
    kinds.TRAINING_JOB.plural,
    labels=TRIAL_LABELS,
)
def owned_trials(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[common.OwnerKey, dict[str, Any]]:
    """Trials (LMTrainingJobs) under the search that controls them."""
    return common.child_index_entry(namespace, body)


@kopf.on.event(
    kinds.TRAINING_JOB.group,
    kinds.TRAINING_JOB.version,
    kinds.TRAINING_JOB.plural,
    labels=TRIAL_LABELS,
)
def trial_event(memo: Any, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    controller = children.controller_of(body)
    if controller is None or controller[1] != KIND.kind:
        return
    try:
        reconcile_search(
            common.kube_of(memo),
            namespace or "default",
            controller[2],
            kwargs,
            kwargs["logger"],
            wait=False,
        )
    except kopf.TemporaryError as exc:
        # Event handlers are not retried: the trial's next status write will be.
        kwargs["logger"].warning(f"Reconciling lmtuningjob {controller[2]} failed: {exc}")


@kopf.on.create(KIND.group, KIND.version, KIND.plural)
def created(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    _on_change(memo, namespace or "default", name, kwargs)


@kopf.on.update(KIND.group, KIND.version, KIND.plural, field="spec")
def updated(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    _on_change(memo, namespace or "default", name, kwargs)


@kopf.on.resume(KIND.group, KIND.version, KIND.plural)
def resumed(memo: Any, namespace: str | None, name: str, **kwargs: Any) -> None:
    reconcile_search(common.kube_of(memo), namespace or "default", name, kwargs, kwargs["logger"])


@kopf.on.event(KIND.group, KIND.version, KIND.plural, when=common.is_deletion)
def forget_deleted(event: Mapping[str, Any], uid: str | None, **_: Any) -> None:
    common.forget_deleted_object(event, uid)
