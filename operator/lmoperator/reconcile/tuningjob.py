"""The LMTuningJob reconciler: a pure function from the search's status and its trial
jobs to what should be done.

Level-based and restart-safe. The trials recorded in status and the child LMTrainingJobs
are the whole truth: each pass rebuilds the search from them (`tuning.search`), so the
operator keeps nothing in memory between passes. Trial n is the LMTrainingJob
`<job>-t<n>` with its parameters in an annotation: a trial whose record was lost (its
status write failed after the create) is adopted back from its job, and a record whose
job is missing gets the same job again, so a restarted operator never starts a duplicate.

Per pass: follow every trial's job (objective, history at checkpoints, end state), stop
the ones early stopping condemns (their job is suspended: its workers go at once, its
status stays), count failures against maxFailedTrials, start new trials up to
parallelTrials and maxTrials, share maxReplicas among the running trials (each change a
recorded decision), and finish: Succeeded with the best trial, or Failed saying why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lmoperator.api import InvalidResourceError, kinds
from lmoperator.api.errors import describe_validation_error
from lmoperator.api.trainingjob import LMTrainingJobSpec
from lmoperator.api.tuningjob import (
    MAX_DECISIONS,
    MAX_RANGE_WARNINGS,
    MAX_TRIAL_HISTORY,
    TUNABLE_FIELDS,
    LMTuningJob,
    ObjectiveMetric,
    ParameterType,
    TrialState,
    TuningConditionType,
    TuningPhase,
    parse_value,
    trial_name,
)
from lmoperator.builders.pods import ROLE_LABEL, child_metadata
from lmoperator.reconcile.children import (
    CreateObject,
    ObservedObject,
    OwnerRef,
    PatchObject,
    Plan,
)
from lmoperator.reconcile.conditions import Conditions, rfc3339
from lmoperator.tuning.allocate import RunningTrial, allocate
from lmoperator.tuning.search import Observation, best, range_warnings, stop_reason, suggest
from lmoperator.tuning.space import fingerprint, params_from_text, to_text

Cond = TuningConditionType
Phase = TuningPhase
ROLE_TRIAL = "trial"
JOB_LABEL = "elasticlm.io/tuning-job"
TRIAL_LABEL = "elasticlm.io/trial"
PARAMETERS_ANNOTATION = "elasticlm.io/parameters"
SEARCH_SPACE_ANNOTATION = "elasticlm.io/search-space"
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})

# Reasons (CamelCase, as conditions and Events want them).
REASON_INVALID = "Invalid"
REASON_TRIALS_RUNNING = "TrialsRunning"
REASON_COMPLETED = "SearchCompleted"
REASON_TOO_MANY_FAILED = "TooManyFailedTrials"
REASON_NO_SUCCESS = "NoSuccessfulTrial"
REASON_TRIAL_STARTED = "TrialStarted"
REASON_TRIAL_SUCCEEDED = "TrialSucceeded"
REASON_TRIAL_FAILED = "TrialFailed"
REASON_TRIAL_STOPPED = "TrialStopped"
REASON_REALLOCATED = "Reallocated"
REASON_AT_EDGE = "AtRangeEdge"
REASON_WITHIN_RANGE = "WithinRange"
REASON_SPACE_CHANGED = "SearchSpaceChanged"
REASON_SPACE_UNCHANGED = "SearchSpaceUnchanged"


def tuning_ref(name: str, namespace: str, uid: str, generation: int = 0) -> OwnerRef:
    return OwnerRef(kinds.TUNING_JOB, name, namespace, uid, generation)


# --------------------------------------------------------------------------------------
# A trial's job


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a spec dict, creating the objects on the way."""
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def trial_spec(
    job: LMTuningJob, name: str, params: Mapping[str, Any], replicas: int
) -> dict[str, Any]:
    """The LMTrainingJob spec of one trial: the template, the parameters set at their
    paths, its own checkpoint directory, and the workers the tuner gives it."""
    spec = job.spec.trial_template.to_wire()
    by_name = {p.name: p for p in job.spec.parameters}
    for pname, value in params.items():
        p = by_name[pname]
        field = TUNABLE_FIELDS[p.path]
        if p.type == ParameterType.CATEGORICAL:
            value = parse_value(field, str(value))
        elif field.type == "integer":
            value = round(value)
        set_path(spec, p.path, value)
    checkpoint = spec.get("checkpoint")
    if isinstance(checkpoint, dict) and checkpoint.get("path"):
        checkpoint["path"] = f"{str(checkpoint['path']).rstrip('/')}/{name}"
    spec["replicas"] = replicas
    return spec


def trial_problems(spec: Mapping[str, Any]) -> list[str]:
    """Why a rendered trial spec is not a valid LMTrainingJob spec ([] when it is)."""
    try:
        LMTrainingJobSpec.model_validate_json(json.dumps(spec), strict=True, by_alias=True)
    except ValidationError as exc:
        return describe_validation_error(exc)
    return []


def trial_manifest(
    ref: OwnerRef,
    number: int,
    spec: dict[str, Any],
    texts: Mapping[str, str],
    space: str | None = None,
) -> dict[str, Any]:
    name = trial_name(ref.name, number)
    meta = child_metadata(
        kinds.TUNING_JOB,
        ref.name,
        ref.uid,
        ref.namespace,
        name,
        {ROLE_LABEL: ROLE_TRIAL, JOB_LABEL: ref.name, TRIAL_LABEL: str(number)},
    )
    meta["annotations"] = {PARAMETERS_ANNOTATION: json.dumps(dict(texts), sort_keys=True)}
    if space:
        meta["annotations"][SEARCH_SPACE_ANNOTATION] = space
    return {
        "apiVersion": kinds.TRAINING_JOB.api_version,
        "kind": kinds.TRAINING_JOB.kind,
        "metadata": meta,
        "spec": spec,
    }


def _objective(
    job: LMTuningJob, child: ObservedObject
) -> tuple[float | None, list[dict[str, Any]]]:
    """(the latest objective, its history at checkpoints) from a trial job's status."""
    status = child.status
    metric = job.spec.objective.metric
    key = {
        ObjectiveMetric.VALIDATION_LOSS: "validationLoss",
        ObjectiveMetric.TRAIN_LOSS: "loss",
        ObjectiveMetric.TOKENS_PER_SECOND: "tokensPerSecond",
    }[metric]
    value = status.get(key)
    value = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    history: list[dict[str, Any]] = []
    if metric == ObjectiveMetric.VALIDATION_LOSS:
        for point in status.get("validationHistory") or []:
            if isinstance(point, Mapping) and isinstance(point.get("step"), int):
                loss = point.get("loss")
                if isinstance(loss, int | float) and math.isfinite(loss):
                    history.append({"step": point["step"], "value": float(loss)})
    return value, history[-MAX_TRIAL_HISTORY:]


def _failure(child: ObservedObject) -> str:
    for c in child.status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Failed" and c.get("status") == "True":
            return f"{child.name} failed: {c.get('reason')}: {c.get('message', '')}".strip()
    return f"{child.name} failed"


# --------------------------------------------------------------------------------------
# The pass


class _Pass:
    def __init__(
        self,
        ref: OwnerRef,
        job: LMTuningJob | None,
        status: Mapping[str, Any],
        trials: Sequence[ObservedObject],
        now: datetime,
    ) -> None:
        self.ref = ref
        self._job = job
        self.now = now
        self.plan = Plan()
        self.status: dict[str, Any] = dict(status)
        self.conditions = Conditions(status.get("conditions"), now, ref.generation)
        self.children = {c.name: c for c in trials}
        self.records: list[dict[str, Any]] = [dict(r) for r in status.get("trials") or []]
        # Trials to create this pass: name -> (number, spec, parameters as text).
        self.pending: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {}

    @property
    def job(self) -> LMTuningJob:
        assert self._job is not None  # only a valid job's pass reads it
        return self._job

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.event(reason, message, warning)

    # -- the trials as they are --------------------------------------------------------

    def adopt(self) -> None:
        """Trials whose job exists but whose record was lost go back into status."""
        known = {r["name"] for r in self.records}
        while True:
            name = trial_name(self.ref.name, len(self.records))
            child = self.children.get(name)
            if child is None or name in known:
                return
            try:
                texts = json.loads(child.annotations.get(PARAMETERS_ANNOTATION, "{}"))
            except ValueError:
                texts = {}
            record = {
                "name": name,
                "number": len(self.records),
                "parameters": {str(k): str(v) for k, v in dict(texts).items()},
                "state": TrialState.RUNNING.value,
                "replicas": child.replicas,
                "startTime": rfc3339(self.now),
            }
            if child.annotations.get(SEARCH_SPACE_ANNOTATION):
                record["searchSpace"] = child.annotations[SEARCH_SPACE_ANNOTATION]
            self.records.append(record)

    def follow(self) -> None:
        """Each running trial's objective and end, from its job."""
        for record in self.records:
            child = self.children.get(record["name"])
            if child is None:
                continue
            value, history = _objective(self.job, child)
            if value is not None:
                record["objective"] = value
            if history:
                record["history"] = history
            if record["state"] != TrialState.RUNNING.value:
                continue
            phase = child.status.get("phase")
            if phase == "Succeeded":
                record["completionTime"] = rfc3339(self.now)
                record["replicas"] = 0
                if value is None:
                    metric = self.job.spec.objective.metric.value
                    record["state"] = TrialState.FAILED.value
                    record["reason"] = f"{child.name} succeeded without reporting {metric}"
                    self.event(REASON_TRIAL_FAILED, record["reason"], warning=True)
                else:
                    record["state"] = TrialState.SUCCEEDED.value
                    self.event(
                        REASON_TRIAL_SUCCEEDED,
                        f"{child.name} finished with {self.job.spec.objective.metric.value} "
                        f"{value:.4g}",
                    )
            elif phase == "Failed":
                record["state"] = TrialState.FAILED.value
                record["reason"] = _failure(child)[:1024]
                record["completionTime"] = rfc3339(self.now)
                record["replicas"] = 0
                self.event(REASON_TRIAL_FAILED, record["reason"], warning=True)

    def observations(self) -> list[Observation]:
        found = []
        for r in self.records:
            params = params_from_text(self.job.spec.parameters, r.get("parameters") or {})
            if params is None:  # a trial of other parameters (the spec changed): not a guide
                params = {}
            history = tuple((int(h["step"]), float(h["value"])) for h in r.get("history") or [])
            found.append(
                Observation(
                    int(r["number"]), params, TrialState(r["state"]), r.get("objective"), history
                )
            )
        return found

    def space_changes(self) -> None:
        """SearchSpaceChanged: spec.parameters changed after trials were recorded. Those
        trials stay (in status and on the cluster); the ones whose point still lies in
        the current space go on guiding the search, the others guide nothing."""
        current = fingerprint(self.job.spec.parameters)
        old, unfit = [], []
        for r in self.records:
            fits = params_from_text(self.job.spec.parameters, r.get("parameters") or {})
            recorded = r.get("searchSpace")
            if fits is None:
                unfit.append(r["name"])
            if fits is None or (recorded is not None and recorded != current):
                old.append(r["name"])
        if not old:
            self.conditions.clear(
                Cond.SEARCH_SPACE_CHANGED,
                REASON_SPACE_UNCHANGED,
                "Every trial is from the current spec.parameters.",
            )
            return
        fitting = [n for n in old if n not in unfit]
        parts = [
            f"spec.parameters changed after trials were recorded: {len(old)} "
            f"{'trial is' if len(old) == 1 else 'trials are'} from an earlier search space "
            f"({', '.join(old)}); they stay in status and on the cluster"
        ]
        if unfit:
            parts.append(f"{', '.join(unfit)} no longer fit and guide nothing")
        if fitting:
            parts.append(f"{', '.join(fitting)} lie inside the new space and still guide it")
        message = "; ".join(parts) + "."
        before = self.conditions.get(Cond.SEARCH_SPACE_CHANGED)
        flipped = self.conditions.set(
            Cond.SEARCH_SPACE_CHANGED, True, REASON_SPACE_CHANGED, message
        )
        if flipped or (before or {}).get("message") != message:
            self.event(REASON_SPACE_CHANGED, message, warning=True)

    # -- decisions ---------------------------------------------------------------------

    def stop_losers(self) -> None:
        observations = self.observations()
        for record, obs in zip(self.records, observations, strict=True):
            if record["state"] != TrialState.RUNNING.value or not obs.params:
                continue
            reason = stop_reason(self.job.spec, observations, obs.number)
            if reason is None:
                continue
            record["state"] = TrialState.EARLY_STOPPED.value
            record["reason"] = reason[:1024]
            record["completionTime"] = rfc3339(self.now)
            record["replicas"] = 0
            if record["name"] in self.children:
                # Suspended: its workers go at once, its status (the history) stays.
                self.plan.actions.append(
                    PatchObject(
                        kinds.TRAINING_JOB,
                        record["name"],
                        {"spec": {"runPolicy": {"suspend": True}}},
                        ROLE_TRIAL,
                        reason,
                    )
                )
            self.event(REASON_TRIAL_STOPPED, f"Stopped {record['name']} early: {reason}")

    def failed_too_often(self) -> str | None:
        failed = [r for r in self.records if r["state"] == TrialState.FAILED.value]
        limit = self.job.spec.budget.max_failed_trials
        if len(failed) > limit:
            last = failed[-1].get("reason") or failed[-1]["name"]
            return (
                f"{len(failed)} trials failed, more than spec.budget.maxFailedTrials ({limit}); "
                f"the last: {last}"
            )
        return None

    def start_trials(self) -> None:
        spec = self.job.spec
        budget = spec.budget
        template = spec.trial_template
        while True:
            running = [r for r in self.records if r["state"] == TrialState.RUNNING.value]
            if len(running) >= budget.parallel_trials or len(self.records) >= budget.max_trials:
                return
            number = len(self.records)
            name = trial_name(self.ref.name, number)
            params = suggest(spec, self.observations())
            texts = {k: to_text(v) for k, v in sorted(params.items())}
            replicas = (
                template.elastic.min_replicas
                if budget.max_replicas is not None
                else template.replicas
            )
            trial = trial_spec(self.job, name, params, replicas)
            record: dict[str, Any] = {
                "name": name,
                "number": number,
                "parameters": texts,
                "searchSpace": fingerprint(spec.parameters),
                "startTime": rfc3339(self.now),
            }
            problems = trial_problems(trial)
            if problems:
                record.update(
                    state=TrialState.FAILED.value,
                    reason=f"parameters {texts} make an invalid LMTrainingJob: "
                    + "; ".join(problems),
                    completionTime=rfc3339(self.now),
                    replicas=0,
                )
                self.records.append(record)
                self.event(REASON_TRIAL_FAILED, record["reason"][:1024], warning=True)
                if self.failed_too_often():
                    return
                continue
            record.update(state=TrialState.RUNNING.value, replicas=replicas)
            self.records.append(record)
            if name not in self.children:
                # Created after the reallocation, with the workers it gives the trial.
                self.pending[name] = (number, trial, texts)

    def recreate_missing(self) -> None:
        """A running trial whose job is missing (its create failed after the status
        write, or someone deleted it) gets the same job again."""
        for record in self.records:
            name = record["name"]
            if record["state"] != TrialState.RUNNING.value or name in self.children:
                continue
            texts = record.get("parameters") or {}
            params = params_from_text(self.job.spec.parameters, texts)
            if params is None:
                record.update(
                    state=TrialState.FAILED.value,
                    reason=f"{name} is missing, and its parameters {texts} no longer fit "
                    "spec.parameters",
                    completionTime=rfc3339(self.now),
                    replicas=0,
                )
                continue
            low = self.job.spec.trial_template.elastic.min_replicas
            replicas = int(record.get("replicas") or low)
            spec = trial_spec(self.job, name, params, replicas)
            self.pending[name] = (int(record["number"]), spec, dict(texts))

    def create_pending(self) -> None:
        for name, (number, trial, texts) in self.pending.items():
            record = self.records[number]
            trial["replicas"] = record["replicas"]
            manifest = trial_manifest(self.ref, number, trial, texts, record.get("searchSpace"))
            self.plan.actions.append(CreateObject(kinds.TRAINING_JOB, manifest, ROLE_TRIAL))
            self.event(REASON_TRIAL_STARTED, f"Started {name} with {texts}")

    def reallocate(self) -> None:
        spec = self.job.spec
        if spec.budget.max_replicas is None:
            return
        template = spec.trial_template
        low = template.elastic.min_replicas
        high = template.elastic.max_replicas or template.replicas
        running = [r for r in self.records if r["state"] == TrialState.RUNNING.value]
        trials = [
            RunningTrial(
                r["name"],
                int(r["number"]),
                low,
                high,
                int(r.get("replicas") or low),
                r.get("objective"),
            )
            for r in running
        ]
        maximize = spec.objective.direction.value == "Maximize"
        by_name = {r["name"]: r for r in running}
        decisions = list(self.status.get("reallocations") or [])
        plan = allocate(spec.budget.max_replicas, trials, maximize, template.elastic.warm_spares)
        # Shrink before growing, so that the trials never hold more than the budget.
        current = {t.name: t.replicas for t in trials}
        for a in sorted(plan, key=lambda a: (a.replicas - current[a.name], a.name)):
            record = by_name[a.name]
            before = int(record.get("replicas") or low)
            if a.replicas == before:
                continue
            record["replicas"] = a.replicas
            if a.name in self.pending:
                continue  # created with these workers: no decision to record
            if a.name in self.children:
                self.plan.actions.append(
                    PatchObject(
                        kinds.TRAINING_JOB,
                        a.name,
                        {"spec": {"replicas": a.replicas}},
                        ROLE_TRIAL,
                        a.reason,
                        subresource="scale",
                    )
                )
            decisions.append(
                {
                    "time": rfc3339(self.now),
                    "trial": a.name,
                    "from": before,
                    "to": a.replicas,
                    "reason": a.reason[:1024],
                }
            )
            self.event(
                REASON_REALLOCATED, f"{a.name}: {before} → {a.replicas} workers ({a.reason})"
            )
        if decisions:
            self.status["reallocations"] = decisions[-MAX_DECISIONS:]

    def result(self) -> None:
        """bestTrial, range warnings, the counts and the space's changes, from the
        records."""
        self.space_changes()
        observations = self.observations()
        top = best(self.job.spec, [o for o in observations if o.params])
        if top is not None:
            record = self.records[top.number]
            self.status["bestTrial"] = {
                "name": record["name"],
                "parameters": record["parameters"],
                "objective": top.value,
            }
            warnings = range_warnings(self.job.spec, top.params)[:MAX_RANGE_WARNINGS]
            if warnings:
                message = "; ".join(warnings)
                if self.conditions.set(Cond.RANGE_WARNING, True, REASON_AT_EDGE, message):
                    self.event(REASON_AT_EDGE, f"The best point is at a range's edge: {message}")
                self.status["rangeWarnings"] = warnings
            else:
                self.conditions.set(
                    Cond.RANGE_WARNING,
                    False,
                    REASON_WITHIN_RANGE,
                    "The best point is inside every range.",
                )
                self.status.pop("rangeWarnings", None)
        states = [r["state"] for r in self.records]
        self.status["succeededTrials"] = states.count(TrialState.SUCCEEDED.value)
        self.status["failedTrials"] = states.count(TrialState.FAILED.value)

    def end(self, succeeded: bool, reason: str, message: str) -> None:
        phase = Phase.SUCCEEDED if succeeded else Phase.FAILED
        self.status["phase"] = phase.value
        self.status.setdefault("completionTime", rfc3339(self.now))
        if self.conditions.set(phase.value, True, reason, message):
            self.event(reason, message, warning=not succeeded)
        self.conditions.clear(Cond.RUNNING, reason, "The search has finished.")

    def stop_running(self, reason: str) -> None:
        """A failed search leaves no trial training."""
        for record in self.records:
            if record["state"] == TrialState.RUNNING.value:
                record["state"] = TrialState.FAILED.value
                record["reason"] = f"The search failed: {reason}"[:1024]
                record["completionTime"] = rfc3339(self.now)
                record["replicas"] = 0
                if record["name"] in self.children:
                    self.plan.actions.append(
                        PatchObject(
                            kinds.TRAINING_JOB,
                            record["name"],
                            {"spec": {"runPolicy": {"suspend": True}}},
                            ROLE_TRIAL,
                            "The search failed",
                        )
                    )

    def run(self, job: LMTuningJob) -> None:
        self._job = job
        self.status.setdefault("startTime", rfc3339(self.now))
        self.conditions.set(Cond.CREATED, True, "Created", "The search was accepted.")
        self.adopt()
        self.follow()
        self.recreate_missing()
        self.stop_losers()
        failure = self.failed_too_often()
        if failure is None:
            self.start_trials()
            failure = self.failed_too_often()
        if failure is not None:
            self.pending.clear()
            self.stop_running(failure)
            self.result()
            self.end(False, REASON_TOO_MANY_FAILED, failure)
            return
        self.reallocate()
        self.create_pending()
        self.result()
        running = sum(1 for r in self.records if r["state"] == TrialState.RUNNING.value)
        budget = self.job.spec.budget
        if running == 0 and len(self.records) >= budget.max_trials:
            best_trial = self.status.get("bestTrial")
            if best_trial is None:
                counts = {s.value: 0 for s in TrialState}
                for r in self.records:
                    counts[r["state"]] += 1
                self.end(
                    False,
                    REASON_NO_SUCCESS,
                    f"No trial succeeded: {counts['Failed']} failed, "
                    f"{counts['EarlyStopped']} stopped early",
                )
            else:
                self.end(
                    True,
                    REASON_COMPLETED,
                    f"Best trial {best_trial['name']}: "
                    f"{self.job.spec.objective.metric.value} {best_trial['objective']:.4g} "
                    f"with {best_trial['parameters']}",
                )
            return
        self.status["phase"] = Phase.RUNNING.value
        done = len(self.records) - running
        self.conditions.set(
            Cond.RUNNING,
            True,
            REASON_TRIALS_RUNNING,
            f"{running} trials running, {done} of {budget.max_trials} done.",
        )

    def finish(self) -> Plan:
        self.status["observedGeneration"] = self.ref.generation
        self.status["trials"] = self.records or None
        self.status["conditions"] = self.conditions.to_list()
        self.plan.status = {k: v for k, v in self.status.items() if v is not None}
        return self.plan


def reconcile(
    ref: OwnerRef,
    job: LMTuningJob | InvalidResourceError,
    status: Mapping[str, Any] | None,
    trials: Sequence[ObservedObject],
    now: datetime,
) -> Plan:
    """The plan for one search: trial jobs to create, scale or suspend; its status; events.

    `trials` are the LMTrainingJobs this search controls.
    """
    status = status or {}
    if isinstance(job, InvalidResourceError):
        p = _Pass(ref, None, status, trials, now)
        if status.get("phase") not in TERMINAL_PHASES:
            p.end(False, REASON_INVALID, "; ".join(job.problems))
        return p.finish()
    p = _Pass(ref, job, status, trials, now)
    if status.get("phase") not in TERMINAL_PHASES:
        p.run(job)
    return p.finish()
