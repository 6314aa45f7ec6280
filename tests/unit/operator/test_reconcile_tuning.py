"""The pure LMTuningJob reconciler: trials as child LMTrainingJobs, restart safety,
failures, early stopping, worker sharing and the end of the search."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lmoperator.api import InvalidResourceError, LMTuningJob, kinds, parse_resource
from lmoperator.api.tuningjob import LMTuningJobStatus
from lmoperator.reconcile.children import (
    CreateObject,
    ObservedObject,
    PatchObject,
    Plan,
    observe_object,
)
from lmoperator.reconcile.tuningjob import reconcile, trial_spec, tuning_ref

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
REF = tuning_ref("tiny-lm-search", "ns", "tune-uid", generation=1)
EXAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "examples" / "tuning-job.yaml"


def make_job(**spec_changes: Any) -> LMTuningJob:
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    doc["spec"].update(spec_changes)
    job = parse_resource(doc)
    assert isinstance(job, LMTuningJob)
    return job


def run(
    job: LMTuningJob | InvalidResourceError,
    status: dict[str, Any] | None,
    children: dict[str, ObservedObject],
) -> Plan:
    plan = reconcile(REF, job, status, list(children.values()), NOW)
    LMTuningJobStatus.model_validate(plan.status, strict=False)  # valid for the API
    return plan


def creates(plan: Plan) -> list[CreateObject]:
    return [a for a in plan.actions if isinstance(a, CreateObject)]


def patches(plan: Plan) -> list[PatchObject]:
    return [a for a in plan.actions if isinstance(a, PatchObject)]


def child(manifest: dict[str, Any], status: dict[str, Any] | None = None) -> ObservedObject:
    obj = copy.deepcopy(manifest)
    obj["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
    obj["status"] = status or {}
    return observe_object(obj)


def finish(obj: ObservedObject, loss: float, phase: str = "Succeeded") -> ObservedObject:
    body = {
        "apiVersion": kinds.TRAINING_JOB.api_version,
        "kind": obj.kind,
        "metadata": {
            "name": obj.name,
            "uid": obj.uid,
            "labels": dict(obj.labels),
            "annotations": dict(obj.annotations),
        },
        "spec": dict(obj.spec),
        "status": {
            "phase": phase,
            "validationLoss": loss,
            "validationHistory": [{"step": 20, "loss": loss + 1}, {"step": 60, "loss": loss}],
        },
    }
    if phase == "Failed":
        body["status"] = {
            "phase": "Failed",
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "WorkerFailed",
                    "message": "exit code 1",
                    "lastTransitionTime": "2026-12-04T12:00:00Z",
                }
            ],
        }
    return observe_object(body)


def test_first_pass_starts_parallel_trials_as_owned_training_jobs() -> None:
    job = make_job()
    plan = run(job, {}, {})
    made = creates(plan)
    assert [c.name for c in made] == ["tiny-lm-search-t0", "tiny-lm-search-t1"]
    manifest = made[0].manifest
    assert manifest["kind"] == "LMTrainingJob"
    [owner] = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LMTuningJob", "tune-uid", True)
    spec = manifest["spec"]
    assert spec["checkpoint"]["path"] == "tiny-lm-search/tiny-lm-search-t0"
    # 4 workers shared: each trial starts at its template's most (2); none is idle.
    assert spec["replicas"] == 2
    params = json.loads(manifest["metadata"]["annotations"]["elasticlm.io/parameters"])
    assert float(params["learningRate"]) == spec["training"]["learningRate"]
    assert int(params["warmupSteps"]) == spec["training"]["warmupSteps"]
    assert [t["state"] for t in plan.status["trials"]] == ["Running", "Running"]
    assert plan.status["phase"] == "Running"


def test_passes_repeated_or_after_a_lost_status_start_no_duplicate() -> None:
    job = make_job()
    first = run(job, {}, {})
    children = {c.name: child(c.manifest) for c in creates(first)}
    again = run(job, first.status, children)
    assert creates(again) == []
    # The status write was lost after the creates: the trials are adopted back, with
    # their parameters, and nothing is created again.
    lost = run(job, {}, children)
    assert creates(lost) == []
    assert [t["parameters"] for t in lost.status["trials"]] == [
        t["parameters"] for t in first.status["trials"]
    ]


def test_the_search_runs_to_the_best_trial() -> None:
    job = make_job(
        budget={"maxTrials": 4, "parallelTrials": 2, "maxReplicas": 4},
        earlyStopping={"policy": "None"},
    )
    status: dict[str, Any] = {}
    children: dict[str, ObservedObject] = {}
    losses = {
        "tiny-lm-search-t0": 3.0,
        "tiny-lm-search-t1": 2.0,
        "tiny-lm-search-t2": 2.5,
        "tiny-lm-search-t3": 4.0,
    }
    for _ in range(4):
        plan = run(job, status, children)
        status = plan.status
        for c in creates(plan):
            children[c.name] = child(c.manifest)
        children = {n: finish(o, losses[n]) for n, o in children.items()}
    assert status["phase"] == "Succeeded"
    assert status["bestTrial"]["name"] == "tiny-lm-search-t1"
    assert status["bestTrial"]["objective"] == 2.0
    assert status["succeededTrials"] == 4
    assert len(children) == 4
    [done] = [c for c in status["conditions"] if c["type"] == "Succeeded"]
    assert done["reason"] == "SearchCompleted"
    assert status["trials"][1]["history"] == [
        {"step": 20, "value": 3.0},
        {"step": 60, "value": 2.0},
    ]


def test_too_many_failed_trials_fail_the_search_saying_why() -> None:
    job = make_job(budget={"maxTrials": 8, "parallelTrials": 2, "maxFailedTrials": 1})
    first = run(job, {}, {})
    children = {c.name: finish(child(c.manifest), 0, "Failed") for c in creates(first)}
    plan = run(job, first.status, children)
    assert plan.status["phase"] == "Failed"
    [failed] = [c for c in plan.status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "TooManyFailedTrials"
    assert "2 trials failed, more than spec.budget.maxFailedTrials (1)" in failed["message"]
    assert "WorkerFailed: exit code 1" in failed["message"]
    assert creates(plan) == []


def test_early_stopping_suspends_a_clearly_bad_trial() -> None:
    job = make_job(
        budget={"maxTrials": 4, "parallelTrials": 2, "maxReplicas": 4},
        earlyStopping={"policy": "Median", "minSteps": 20, "minCompletedTrials": 2},
    )
    plan = run(job, {}, {})
    children = {
        c.name: finish(child(c.manifest), loss)
        for c, loss in zip(creates(plan), (2.0, 2.2), strict=True)
    }
    plan = run(job, plan.status, children)
    new = creates(plan)
    assert [c.name for c in new] == ["tiny-lm-search-t2", "tiny-lm-search-t3"]
    body = {
        **new[0].manifest,
        "status": {
            "phase": "Running",
            "validationLoss": 9.0,
            "validationHistory": [{"step": 20, "loss": 9.0}],
        },
    }
    body["metadata"] = {**body["metadata"], "uid": "u2"}
    children[new[0].name] = observe_object(body)
    children[new[1].name] = child(new[1].manifest)
    plan = run(job, plan.status, children)
    stops = [p for p in patches(plan) if p.patch == {"spec": {"runPolicy": {"suspend": True}}}]
    assert [p.name for p in stops] == ["tiny-lm-search-t2"]
    row = plan.status["trials"][2]
    assert row["state"] == "EarlyStopped"
    assert row["reason"].startswith("Median: 9 at step 20 is worse than the median")


def test_the_leader_gets_the_spare_workers_through_the_scale_subresource() -> None:
    job = make_job(
        earlyStopping={"policy": "None"},
        budget={"maxTrials": 8, "parallelTrials": 2, "maxReplicas": 3},
    )
    plan = run(job, {}, {})
    made = creates(plan)
    children = {}
    assert [c.manifest["spec"]["replicas"] for c in made] == [2, 1]  # 3 shared, by number
    for c, loss in zip(made, (3.0, 2.0), strict=True):
        body = {
            **c.manifest,
            "status": {
                "phase": "Running",
                "validationLoss": loss,
                "validationHistory": [{"step": 20, "loss": loss}],
            },
        }
        children[c.name] = observe_object(body)
    plan = run(job, plan.status, children)
    scale = [p for p in patches(plan) if p.subresource == "scale"]
    assert [(p.name, p.patch) for p in scale] == [
        ("tiny-lm-search-t0", {"spec": {"replicas": 1}}),
        ("tiny-lm-search-t1", {"spec": {"replicas": 2}}),
    ]
    trailing, leading = plan.status["reallocations"]
    assert (leading["trial"], leading["from"], leading["to"]) == ("tiny-lm-search-t1", 1, 2)
    assert leading["reason"].startswith("Leading: rank 1 of 2 (objective 2)")
    assert trailing["reason"].startswith("Trailing: rank 2 of 2 (objective 3)")
    assert "Reallocated" in [e.reason for e in plan.events]


def test_parameters_that_make_an_invalid_job_fail_that_trial_only() -> None:
    job = make_job(
        parameters=[
            {
                "name": "width",
                "path": "model.size.hiddenSize",
                "type": "Categorical",
                "values": ["128"],
            }
        ],
        algorithm={"name": "Random"},
    )
    plan = run(job, {}, {})
    assert creates(plan) == []
    rows = plan.status["trials"]
    assert rows[0]["state"] == "Failed"
    assert "make an invalid LMTrainingJob" in rows[0]["reason"]


def test_trial_spec_sets_parameters_at_their_paths() -> None:
    job = make_job()
    spec = trial_spec(job, "x-t3", {"learningRate": 0.002, "warmupSteps": 10}, 2)
    assert spec["training"]["learningRate"] == 0.002
    assert spec["training"]["warmupSteps"] == 10
    assert spec["checkpoint"]["path"] == "tiny-lm-search/x-t3"
    assert spec["replicas"] == 2


def test_an_invalid_spec_fails_the_search() -> None:
    error = InvalidResourceError("LMTuningJob/x", ["spec.parameters: field required"])
    plan = run(error, {}, {})
    assert plan.status["phase"] == "Failed"
    [failed] = [c for c in plan.status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "Invalid"


def test_a_running_trial_whose_job_is_missing_gets_the_same_job_again() -> None:
    job = make_job()
    first = run(job, {}, {})
    made = {c.name: c.manifest for c in creates(first)}
    # The creates failed after the status was written: the next pass makes them again,
    # with the same names and parameters, and no new trial.
    again = run(job, first.status, {})
    assert {c.name: c.manifest for c in creates(again)} == made
    assert len(again.status["trials"]) == 2


def conditions(plan: Plan) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in plan.status["conditions"]}


def test_changed_parameters_keep_the_old_trials_and_say_which_they_are() -> None:
    job = make_job()
    first = run(job, {}, {})
    children = {c.name: child(c.manifest) for c in creates(first)}
    t0, t1 = (first.status["trials"][i] for i in (0, 1))
    assert t0["searchSpace"] == t1["searchSpace"]
    assert "SearchSpaceChanged" not in conditions(first)
    # An unchanged spec, passed again: no condition, no event.
    same = run(job, first.status, children)
    assert "SearchSpaceChanged" not in conditions(same)

    # The learning rate's range narrows to one that holds t0's point but not t1's, and a
    # parameter's bounds change: the spec's fingerprint changes for both trials.
    lr0 = float(t0["parameters"]["learningRate"])
    lr1 = float(t1["parameters"]["learningRate"])
    low, high = sorted((lr0, lr1))
    keep = lr0  # the trial whose point stays inside
    drop = "tiny-lm-search-t1" if keep == lr0 else "tiny-lm-search-t0"
    kept = "tiny-lm-search-t0" if keep == lr0 else "tiny-lm-search-t1"
    new_range = (
        {"min": low * 0.99, "max": (low + high) / 2}
        if keep == low
        else {"min": (low + high) / 2, "max": high * 1.01}
    )
    params = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"]["parameters"])
    params[0].update(new_range)
    changed = make_job(parameters=params)
    plan = run(changed, first.status, children)
    cond = conditions(plan)["SearchSpaceChanged"]
    assert (cond["status"], cond["reason"]) == ("True", "SearchSpaceChanged")
    message = cond["message"]
    assert (
        "2 trials are from an earlier search space (tiny-lm-search-t0, tiny-lm-search-t1)"
        in message
    )
    assert f"{drop} no longer fit and guide nothing" in message
    assert f"{kept} lie inside the new space and still guide it" in message
    # Old trials stay as they were, and say which space they came from.
    assert [t["name"] for t in plan.status["trials"]] == [t0["name"], t1["name"]]
    assert plan.status["trials"][0]["searchSpace"] == t0["searchSpace"]
    [event] = [e for e in plan.events if e.reason == "SearchSpaceChanged"]
    assert (event.type, event.message) == ("Warning", message)
    # The same state again: the condition stays, no second event.
    again = run(changed, plan.status, children)
    assert conditions(again)["SearchSpaceChanged"]["status"] == "True"
    assert not [e for e in again.events if e.reason == "SearchSpaceChanged"]


def test_trials_started_after_a_change_carry_the_new_space() -> None:
    job = make_job()
    first = run(job, {}, {})
    children = {c.name: child(c.manifest) for c in creates(first)}
    params = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"]["parameters"])
    params[1]["max"] = 40  # warm-up up to 40 steps now: every old point still fits
    changed = make_job(parameters=params)
    done = {name: finish(c, 2.0 + i) for i, (name, c) in enumerate(children.items())}
    plan = run(changed, first.status, done)
    trials = plan.status["trials"]
    assert len(trials) == 4
    assert trials[2]["searchSpace"] == trials[3]["searchSpace"] != trials[0]["searchSpace"]
    annotations = creates(plan)[0].manifest["metadata"]["annotations"]
    assert annotations["elasticlm.io/search-space"] == trials[2]["searchSpace"]
    cond = conditions(plan)["SearchSpaceChanged"]
    assert "2 trials are from an earlier search space" in cond["message"]
    assert "tiny-lm-search-t2" not in cond["message"]
    assert "no longer fit" not in cond["message"]
