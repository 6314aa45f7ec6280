"""The LMTrainingJob autoscaler's loop (autoscale/jobloop.py): pure, clock passed in."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from lmoperator.api.trainingjob import TrainingAutoscaling
from lmoperator.autoscale import jobloop
from lmoperator.autoscale.jobloop import JobAutoscalerState, WorkerReport
from lmoperator.autoscale.training import ScalingCurve, TrainingReason
from lmoperator.worker_metrics import WorkerMetrics

CURVE = ScalingCurve(t1=100.0, alpha=0.15)
T0 = 1_000_000.0


def spec(**kw: object) -> TrainingAutoscaling:
    base: dict[str, object] = {
        "policy": "Throughput",
        "minEfficiency": 0.6,
        "intervalSeconds": 5,
        "cooldownSeconds": 0,
        "pendingTimeoutSeconds": 20,
        "backoffSeconds": 100,
    }
    base.update(kw)
    return TrainingAutoscaling.model_validate(base)


def workers(
    n: int, now: float, *, step: int, rnd: int = 1, tps: float | None = None, report: int = -1
) -> list[WorkerReport]:
    """n ready workers at world size n; the first `report` of them (all: -1) report."""
    value = CURVE.throughput(n) if tps is None else tps
    out = []
    for i in range(n):
        reporting = report < 0 or i < report
        metrics = WorkerMetrics(
            step=step, tokens_per_second=value, world_size=n, rank=i, round=rnd,
            reform_seconds=0.5,
        )  # fmt: skip
        out.append(
            WorkerReport(
                f"j-worker-{i}",
                i,
                "Running",
                True,
                False,
                T0,
                metrics if reporting else None,
                now if reporting else None,
            )
        )
    return out


def run(
    state: JobAutoscalerState,
    current: int,
    pods: list[WorkerReport],
    now: float,
    history: list[dict[str, object]] | None = None,
    **kw: object,
) -> jobloop.JobOutcome | None:
    return jobloop.decide(
        state,
        spec(**kw),
        min_workers=1,
        max_workers=8,
        spec_replicas=current,
        generation=1,
        workers=pods,
        history=history or [],
        now=now,
        scrape_interval=1.0,
    )


def grow(state: JobAutoscalerState, current: int, now: float) -> tuple[int, float]:
    """Measure the current size past its warm-up, then decide once; (size, time)."""
    step = 10
    decided = None
    for _ in range(12):
        step += 1
        now += 1
        decided = run(state, current, workers(current, now, step=step, rnd=current), now)
        if decided is not None and decided.decision.reason != TrainingReason.NO_MEASUREMENTS:
            break
    assert decided is not None
    return decided.decision.desired, now


def test_grows_one_step_at_a_time_and_stops_where_efficiency_drops() -> None:
    state = JobAutoscalerState()
    size, now = 1, T0
    sizes = [size]
    for _ in range(10):
        nxt, now = grow(state, size, now)
        if nxt == size:
            break
        assert nxt == size + 1  # one step at a time
        size = nxt
        sizes.append(size)
        now += 6  # past the interval
    expected = 1
    while CURVE.marginal_efficiency(expected) >= 0.6:
        expected += 1
    assert size == expected == 2
    assert sizes == [1, 2]


def test_a_flatter_curve_grows_further() -> None:
    global CURVE
    saved, CURVE = CURVE, ScalingCurve(t1=100.0, alpha=0.05)
    try:
        state = JobAutoscalerState()
        size, now = 1, T0
        for _ in range(10):
            nxt, now = grow(state, size, now)
            if nxt == size:
                break
            size = nxt
            now += 6
        expected = 1
        while CURVE.marginal_efficiency(expected) >= 0.6 and expected < 8:
            expected += 1
        assert size == expected > 2
    finally:
        CURVE = saved


def test_first_steps_of_a_round_are_not_measured() -> None:
    state = JobAutoscalerState()
    out = run(state, 2, workers(2, T0, step=5, tps=1.0), T0)
    assert out is not None
    assert out.decision.reason == TrainingReason.NO_MEASUREMENTS
    assert not state.observations
    run(state, 2, workers(2, T0 + 1, step=6, tps=1.0), T0 + 1)
    assert not state.observations
    run(state, 2, workers(2, T0 + 2, step=7, tps=150.0), T0 + 2)
    assert list(state.observations[2]) == [150.0]


def test_too_few_reports_hold_blind() -> None:
    state = JobAutoscalerState()
    out = run(state, 4, workers(4, T0, step=10, report=1), T0)
    assert out is not None
    assert out.decision.reason == TrainingReason.TOO_FEW_REPORTS
    assert not out.active
    assert out.scale_to is None
    assert "only 1 of 4" in out.decision.message
    # Half is enough.
    state = JobAutoscalerState()
    out = run(state, 4, workers(4, T0, step=10, report=2), T0)
    assert out is not None
    assert out.decision.reason != TrainingReason.TOO_FEW_REPORTS


def test_stale_reports_are_not_reports() -> None:
    state = JobAutoscalerState()
    pods = workers(2, T0 - 10, step=10)  # scraped 10 s ago, 2 x 1 s is the limit
    out = run(state, 2, pods, T0)
    assert out is not None
    assert out.decision.reason == TrainingReason.NO_METRICS
    assert not out.active


def test_rescale_in_progress_holds() -> None:
    state = JobAutoscalerState()
    pods = workers(2, T0, step=10)  # world size 2 while spec.replicas is 3
    out = run(state, 3, pods, T0)
    assert out is not None
    assert out.decision.reason == TrainingReason.RESCALE_IN_PROGRESS
    assert out.active
    assert out.scale_to is None


def test_interval_between_decisions() -> None:
    state = JobAutoscalerState()
    assert run(state, 2, workers(2, T0, step=10), T0) is not None
    assert run(state, 2, workers(2, T0 + 2, step=11), T0 + 2) is None
    assert run(state, 2, workers(2, T0 + 5, step=12), T0 + 5) is not None


def test_cooldown_comes_from_the_history() -> None:
    state = JobAutoscalerState()
    state.observations = {n: deque([CURVE.throughput(n)]) for n in (1, 2)}
    when = datetime.fromtimestamp(T0 - 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history: list[dict[str, object]] = [{"time": when, "from": 1, "to": 2, "reason": "x"}]
    out = run(state, 2, workers(2, T0, step=10), T0, history=history, cooldownSeconds=60)
    assert out is not None
    assert out.decision.reason == TrainingReason.COOLDOWN


def pending(index: int, created: float) -> WorkerReport:
    return WorkerReport(f"j-worker-{index}", index, "Pending", False, False, created)


def test_pending_worker_times_out_and_the_job_backs_off() -> None:
    state = JobAutoscalerState()
    for size in (1, 2):
        state.observations[size] = deque([CURVE.throughput(size)])
    pods = [*workers(2, T0, step=10), pending(2, T0 - 10)]
    out = run(state, 3, pods, T0, minEfficiency=0.5)  # the best size is 3
    # Not yet: 10 s of 20.
    assert out is not None
    assert out.decision.reason == TrainingReason.RESCALE_IN_PROGRESS
    now = T0 + 11
    pods = [*workers(2, now, step=20), pending(2, T0 - 10)]
    out = run(state, 3, pods, now, minEfficiency=0.5)
    assert out is not None
    assert out.decision.reason == TrainingReason.PENDING_TIMEOUT
    assert out.scale_to == 2
    assert out.backoff_started
    assert out.entry is not None
    assert out.entry["from"] == 3
    assert out.entry["to"] == 2
    assert "Pending longer than pendingTimeoutSeconds (20 s)" in out.entry["reason"]
    # Back at 2 (the pending pod deleted): no scale-up during the backoff ...
    later = now + 10
    out = run(state, 2, workers(2, later, step=30), later, minEfficiency=0.5)
    assert out is not None
    assert out.decision.reason == TrainingReason.CAPACITY_BACKOFF
    assert out.scale_to is None
    assert out.active
    # ... and one after it.
    after = now + 101
    out = run(state, 2, workers(2, after, step=40), after, minEfficiency=0.5)
    assert out is not None
    assert out.scale_to == 3


def test_pending_worker_never_blocks_a_scale_down() -> None:
    state = JobAutoscalerState()
    # spec.replicas went down to 2 while worker 2 still pends: it is beyond the members.
    pods = [*workers(2, T0, step=10), pending(2, T0 - 100)]
    out = run(state, 2, pods, T0)
    assert out is not None
    assert out.decision.reason != TrainingReason.PENDING_TIMEOUT


def test_own_write_survives_a_stale_body() -> None:
    state = JobAutoscalerState()
    jobloop.wrote(state, 3, generation=5)
    assert jobloop.effective_replicas(state, 2, generation=4) == 3
    assert jobloop.effective_replicas(state, 4, generation=6) == 4  # a later manual write


def test_worker_reports_from_pod_bodies() -> None:
    pod = {
        "metadata": {
            "name": "j-worker-1",
            "labels": {"elasticlm.io/index": "1"},
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    m = WorkerMetrics(tokens_per_second=5.0)
    (r,) = jobloop.worker_reports([pod], {"j-worker-1": m}, 42.0, "elasticlm.io/index")
    assert r.index == 1
    assert r.ready
    assert r.metrics == m
    assert r.scraped_at == 42.0
    assert r.created_at == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    (r,) = jobloop.worker_reports([pod], {}, 42.0, "elasticlm.io/index")
    assert r.metrics is None
    assert r.scraped_at is None


def test_with_several_processes_per_pod_the_world_size_is_counted_in_pods() -> None:
    pod = {
        "metadata": {"name": "j-worker-0", "labels": {"elasticlm.io/index": "0"}},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    m = WorkerMetrics(tokens_per_second=5.0, world_size=6)  # 3 pods x 2 processes
    (r,) = jobloop.worker_reports(
        [pod], {"j-worker-0": m}, 42.0, "elasticlm.io/index", processes_per_pod=2
    )
    assert r.metrics is not None
    assert r.metrics.world_size == 3
    assert r.metrics.tokens_per_second == 5.0


def test_the_backoff_survives_a_restart_through_the_history() -> None:
    state = JobAutoscalerState()  # a fresh operator: nothing in memory
    state.observations = {n: deque([CURVE.throughput(n)]) for n in (1, 2)}
    when = datetime.fromtimestamp(T0 - 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history: list[dict[str, object]] = [
        {"time": when, "from": 3, "to": 2, "reason": "PendingTimeout: worker 2 stayed Pending"}
    ]
    out = run(state, 2, workers(2, T0, step=10), T0, history=history, minEfficiency=0.5)
    assert out is not None
    assert out.decision.reason == TrainingReason.CAPACITY_BACKOFF
    later = T0 + 100
    out = run(state, 2, workers(2, later, step=20), later, history=history, minEfficiency=0.5)
    assert out is not None
    assert out.scale_to == 3
