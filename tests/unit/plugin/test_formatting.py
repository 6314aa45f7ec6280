"""The kubectl plugin's pure parts: names of kinds, tables, describe pages, log merging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lmoperator.api import kinds
from lmoperator.plugin import describe, loglines, tables
from lmoperator.plugin.resources import (
    Selection,
    Target,
    UsageError,
    find_kind,
    parse_selection,
    parse_target,
)

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
JOB, SVC = kinds.TRAINING_JOB, kinds.SERVICE


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(name: str = "lm", namespace: str = "team", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": JOB.api_version,
        "kind": JOB.kind,
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": ago(300)},
        "spec": {
            "replicas": 3,
            "elastic": {"minReplicas": 1, "maxReplicas": 4, "maxRestarts": 3},
            "training": {"steps": 300},
            "autoscaling": {"policy": "None"},
        },
        "status": status,
    }


def service(name: str = "chat", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": SVC.api_version,
        "kind": SVC.kind,
        "metadata": {"name": name, "namespace": "team", "creationTimestamp": ago(90)},
        "spec": {
            "replicas": 2,
            "model": {"fromTrainingJob": {"name": "lm"}},
            "compression": {"quantization": "int8", "maxPerplexityIncrease": 0.05},
        },
        "status": status,
    }


# --------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    "name",
    ["lmtj", "LMTJ", "lmtrainingjob", "lmtrainingjobs", "LMTrainingJob",
     "lmtrainingjobs.elasticlm.io", "lmtrainingjob.elasticlm.io"],
)  # fmt: skip
def test_a_training_job_answers_to_every_name_kubectl_would_accept(name: str) -> None:
    assert find_kind(name) is JOB


@pytest.mark.parametrize("name", ["lms", "lmservice", "LMServices", "lmservices.elasticlm.io"])
def test_a_service_answers_to_its_names(name: str) -> None:
    assert find_kind(name) is SVC


def test_every_registered_kind_is_known_by_its_short_names_and_plural() -> None:
    for kind in kinds.CUSTOM_KINDS:
        for name in (*kind.short_names, kind.plural, kind.singular, kind.kind):
            assert find_kind(name) is kind


def test_other_kinds_are_not_ours() -> None:
    assert find_kind("pods") is None
    assert find_kind("lmtjx") is None


@pytest.mark.parametrize(
    ("words", "expected"),
    [(["lmtj/lm"], Target(JOB, "lm")), (["lms", "chat"], Target(SVC, "chat"))],
)
def test_targets(words: list[str], expected: Target) -> None:
    assert parse_target(words, "KIND/NAME") == expected
    assert expected.label in ("lmtj/lm", "lms/chat")


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["pods/x"], 'unknown kind "pods": kubectl lm knows lmtj (lmtrainingjob, lmtrainingjobs)'),
        (["lmtj/"], '"lmtj/" names no object: write lmtj/NAME'),
        (["lm"], "expected KIND/NAME, got lm"),
        (["lmtj", "a", "b"], "expected KIND/NAME, got lmtj a b"),
        ([], "expected KIND/NAME, got nothing"),
    ],
)
def test_bad_targets_say_what_to_write(words: list[str], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_target(words, "KIND/NAME")
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], Selection(kinds.CUSTOM_KINDS)),
        (["lmtj"], Selection((JOB,))),
        (["lmtj", "a", "b"], Selection((JOB,), ("a", "b"))),
        (["lms/a", "lms/b"], Selection((SVC,), ("a", "b"))),
        (["lms,lmtj"], Selection((SVC, JOB))),
        (["mymodel"], Selection(kinds.CUSTOM_KINDS, ("mymodel",))),
    ],
)
def test_get_selections_read_as_kubectl_reads_them(words: list[str], expected: Selection) -> None:
    assert parse_selection(words) == expected


@pytest.mark.parametrize(
    "words", [["lms/a", "lmtj/b"], ["lms/a", "b"], ["lms,lmtj", "a"], ["pods,lms"]]
)
def test_get_selections_that_cannot_be(words: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_selection(words)


# --------------------------------------------------------------------------------------
# Values and tables


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"),
        (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
        (3 * 3600 + 60 * 5, "3h5m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
        (50 * 3600, "2d2h"), (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"),
        (731 * 86400, "2y1d"), (9 * 365 * 86400, "9y"),
    ],
)  # fmt: skip
def test_human_duration_is_kubectls(seconds: int, shown: str) -> None:
    """The cases of k8s.io/apimachinery/pkg/util/duration's HumanDuration."""
    assert tables.human_duration(seconds) == shown


def test_rates_and_losses_are_short() -> None:
    assert [tables.rate(v) for v in (None, 812.34, 12_345, 2_500_000, True)] == [
        "-", "812.3", "12.3k", "2.5M", "-",
    ]  # fmt: skip
    assert tables.loss(2.31456) == "2.315"
    assert tables.loss("x") == "-"


def test_training_job_table() -> None:
    running = job(
        phase="Running", readyReplicas=2, worldSize=2, step=120, loss=2.31456,
        tokensPerSecond=12_345.6,
    )  # fmt: skip
    pending = job("fresh", phase="Pending")
    assert tables.get_table(JOB, [running, pending], NOW) == [
        "NAME    PHASE     READY   WORLD   STEP      LOSS    TOKENS/S   AGE",
        "fresh   Pending   0/3     -       0/300     -       -          5m",
        "lm      Running   2/3     2       120/300   2.315   12.3k      5m",
    ]


def test_wide_qualified_and_all_namespaces() -> None:
    done = job(phase="Succeeded", step=300, restarts=1, lastCheckpoint={"step": 300})
    assert tables.get_table(JOB, [done], NOW, wide=True, namespaces=True, qualify=True) == [
        "NAMESPACE   NAME      PHASE       READY   WORLD   STEP      LOSS   TOKENS/S   "
        "RESTARTS   CHECKPOINT   AGE",
        "team        lmtj/lm   Succeeded   0/3     -       300/300   -      -          "
        "1          step 300     5m",
    ]


def test_service_table_names_the_model_and_the_endpoint() -> None:
    ready = service(phase="Ready", readyReplicas=2, endpoint="http://chat.team.svc/v1")
    hf = service("hf", phase="Pending")
    hf["spec"]["model"] = {"hf": {"claimName": "models", "path": "smollm2"}}
    assert tables.get_table(SVC, [ready, hf], NOW) == [
        "NAME   PHASE     READY   MODEL               ENDPOINT                  AGE",
        "chat   Ready     2/2     lmtj/lm             http://chat.team.svc/v1   90s",
        "hf     Pending   0/2     hf:models:smollm2   -                         90s",
    ]


def test_a_kind_without_columns_gets_name_phase_and_age() -> None:
    other = kinds.ResourceKind(kinds.GROUP, kinds.VERSION, "LMOther", "lmothers", ("lmo",))
    obj = {"metadata": {"name": "x", "creationTimestamp": ago(3)}, "status": {"phase": "Up"}}
    assert tables.get_table(other, [obj], NOW) == ["NAME   PHASE   AGE", "x      Up      3s"]


# --------------------------------------------------------------------------------------
# describe


def test_describe_a_training_job() -> None:
    status: dict[str, Any] = {
        "phase": "Running",
        "replicas": 3,
        "readyReplicas": 3,
        "worldSize": 3,
        "step": 120,
        "loss": 2.3,
        "tokensPerSecond": 1500.5,
        "restarts": 1,
        "startTime": ago(300),
        "lastCheckpoint": {"step": 100, "time": ago(20)},
        "conditions": [
            {"type": "Created", "status": "True", "reason": "JobCreated",
             "lastTransitionTime": ago(300), "message": "The job was accepted."},
            {"type": "Scaling", "status": "False", "reason": "ScalingComplete",
             "lastTransitionTime": ago(60), "message": "3 workers"},
        ],
        "scalingHistory": [
            {"time": ago(100), "from": 2, "to": 3, "reason": "Manual: spec.replicas 2 → 3",
             "metrics": {"tokensPerSecond": 1234.56, "worldSize": 2.0}},
        ],
    }  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "Normal", "reason": "ScalingUp", "message": "2 to 3",
         "lastTimestamp": ago(100), "firstTimestamp": ago(100), "count": 1,
         "source": {"component": "elasticlm-operator"}},
        {"type": "Warning", "reason": "WorkerFailed", "message": "worker 1 died",
         "lastTimestamp": ago(30), "firstTimestamp": ago(200), "count": 2,
         "source": {"component": "elasticlm-operator"}},
        {"type": "Normal", "reason": "JobCreated", "message": "Created",
         "lastTimestamp": ago(300), "source": {"component": "elasticlm-operator"}},
    ]  # fmt: skip
    page = describe.describe(JOB, job(**status), events, NOW)
    assert page == [
        "Name:        lm",
        "Namespace:   team",
        "Kind:        LMTrainingJob (elasticlm.io/v1alpha1)",
        f"Created:     {ago(300)} (5m ago)",
        "Phase:       Running",
        "Workers:     3 desired, 3 exist, 3 ready, world size 3 (elastic 1..4)",
        "Progress:    step 120/300, loss 2.300, 1.5k tokens/s",
        f"Checkpoint:  step 100, saved {ago(20)} (20s ago)",
        "Restarts:    1 (spec.elastic.maxRestarts 3)",
        "Autoscaling: None",
        f"Started:     {ago(300)} (5m ago)",
        "Conditions:",
        "  TYPE      STATUS   REASON            AGE   MESSAGE",
        "  Created   True     JobCreated        5m    The job was accepted.",
        "  Scaling   False    ScalingComplete   60s   3 workers",
        "Scaling history:",
        "  AGE    FROM   TO   REASON                        METRICS",
        "  100s   2      3    Manual: spec.replicas 2 → 3   tokensPerSecond=1235 worldSize=2",
        "Events:",
        "  TYPE      REASON         AGE                   FROM                 MESSAGE",
        "  Normal    JobCreated     5m                    elasticlm-operator   Created",
        "  Normal    ScalingUp      100s                  elasticlm-operator   2 to 3",
        "  Warning   WorkerFailed   30s (x2 over 3m20s)   elasticlm-operator   worker 1 died",
    ]  # fmt: skip


def test_describe_shows_the_warm_spares_of_a_job_that_has_them() -> None:
    plain = describe.describe(JOB, job(), [], NOW)
    assert not any(line.startswith("Spares:") for line in plain)
    spared = job(replicas=3, spares={"total": 1, "ready": 1, "promoted": 2})
    spared["spec"]["elastic"]["warmSpares"] = 1
    page = describe.describe(JOB, spared, [], NOW)
    assert "Spares:      1 wanted, 1 exist, 1 standing by, 2 promoted to workers" in page


def test_describe_says_none_for_empty_sections_and_leaves_out_unknown_fields() -> None:
    page = describe.describe(JOB, job(), [], NOW)
    assert "Progress:" not in "\n".join(page)
    assert "Completed:" not in "\n".join(page)
    assert page[-6:] == [
        "Conditions:", "  <none>", "Scaling history:", "  <none>", "Events:", "  <none>",
    ]  # fmt: skip


def test_describe_a_compressed_service() -> None:
    status: dict[str, Any] = {
        "phase": "Ready",
        "replicas": 2,
        "readyReplicas": 2,
        "updatedReplicas": 2,
        "endpoint": "http://chat.team.svc/v1",
        "model": {
            "checkpoint": "LMTrainingJob lm, export of the finished job",
            "precision": "fp32: int8 computes in fp32",
            "perplexityBefore": 10.0,
            "perplexityAfter": 10.3,
        },
    }
    page = describe.describe(SVC, service(**status), [], NOW)
    assert page[5:11] == [
        "Replicas:    2 desired, 2 exist, 2 ready, 2 updated",
        "Model:       lmtj/lm (serving: LMTrainingJob lm, export of the finished job)",
        "Precision:   fp32: int8 computes in fp32",
        "Perplexity:  10.000 before compression, 10.300 after (+3.0%, limit +5%)",
        "Endpoint:    http://chat.team.svc/v1",
        "Autoscaling: manual (spec.replicas)",
    ]


def test_new_rows_are_one_entry_in_the_kinds_lists() -> None:
    """What the autoscaling and tuning work extends: fields and sections per kind."""
    extra = describe.Field("Recommendation", lambda o, n: "4 replicas")
    fields = describe.FIELDS[JOB.kind]
    describe.FIELDS[JOB.kind] = (*fields, extra)
    try:
        assert "Recommendation: 4 replicas" in describe.describe(JOB, job(), [], NOW)
    finally:
        describe.FIELDS[JOB.kind] = fields


# --------------------------------------------------------------------------------------
# Logs


def test_workers_are_labelled_by_rank_and_sorted_by_it() -> None:
    assert loglines.worker_source("lm-worker-10", "10").label == "rank 10"
    assert (
        loglines.worker_source("lm-worker-2", "2").order
        < loglines.worker_source("lm-worker-10", "10").order
    )
    assert loglines.worker_source("odd", None).label == "odd"
    assert loglines.pod_source("chat-server-abc").prefix("hi") == "[chat-server-abc] hi"


def test_merge_interleaves_by_the_lines_own_time_and_keeps_each_pods_order() -> None:
    rank0 = [
        "starting",
        "2026-12-04 12:00:01,000 step 10",
        "2026-12-04 12:00:03,000 step 20",
        "Traceback (most recent call last):",
        '  File "train.py"',
    ]
    rank1 = [
        "2026-12-04 12:00:02,500 joined",
        "2026-12-04 12:00:03,000 step 20",
        "2026-12-04 12:00:04,000 step 30",
    ]
    merged = loglines.merge(
        [(loglines.worker_source("w-1", "1"), rank1), (loglines.worker_source("w-0", "0"), rank0)]
    )
    assert merged == [
        "[rank 0] starting",
        "[rank 0] 2026-12-04 12:00:01,000 step 10",
        "[rank 1] 2026-12-04 12:00:02,500 joined",
        "[rank 0] 2026-12-04 12:00:03,000 step 20",
        "[rank 0] Traceback (most recent call last):",
        '[rank 0]   File "train.py"',
        "[rank 1] 2026-12-04 12:00:03,000 step 20",
        "[rank 1] 2026-12-04 12:00:04,000 step 30",
    ]


def test_merge_reads_the_time_after_the_api_servers_timestamp() -> None:
    a = ["2026-12-04T12:00:09.000000000Z 2026-12-04T12:00:01.5Z first"]
    b = ["2026-12-04T12:00:05.000000000Z 2026-12-04 12:00:01.250 earlier"]
    merged = loglines.merge([(loglines.pod_source("a"), a), (loglines.pod_source("b"), b)])
    assert [line.split()[-1] for line in merged] == ["earlier", "first"]
    assert loglines.split_server_time(a[0]) == ("2026-12-04T12:00:09.000000000Z", a[0][31:])


def test_merge_of_logs_without_times_keeps_them_whole_in_rank_order() -> None:
    merged = loglines.merge(
        [
            (loglines.worker_source("w-1", "1"), ["b1", "b2"]),
            (loglines.worker_source("w-0", "0"), ["a1", "a2"]),
            (loglines.worker_source("w-2", "2"), []),
        ]
    )
    assert merged == ["[rank 0] a1", "[rank 0] a2", "[rank 1] b1", "[rank 1] b2"]


def test_describe_shows_the_held_out_loss_and_the_precision() -> None:
    reason = "auto chose bf16: AMD EPYC computes bf16 natively (avx512_bf16)"
    status: dict[str, Any] = {
        "step": 20,
        "initialValidationLoss": 3.4121,
        "validationLoss": 3.0,
        "precision": {"requested": "auto", "chosen": "bf16", "reason": reason},
    }
    page = "\n".join(describe.describe(JOB, job(**status), [], NOW))
    assert "Held-out loss: 3.412 before training, 3.000 now (-0.412)" in page
    assert f"Precision:     bf16: {reason}" in page
    before_only = "\n".join(describe.describe(JOB, job(initialValidationLoss=3.4), [], NOW))
    assert "3.400 before training\n" in before_only
