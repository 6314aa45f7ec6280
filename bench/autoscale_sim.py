"""Autoscaler simulator: our LMService policy against the HPA and the KPA on load traces.

A trace-driven simulation of one LMService, run once per policy with the same arrivals
(the same seed), prints one JSON line with, per trace and policy: SLO attainment (share
of requests answered within `--slo-seconds`), replica-seconds (every pod that exists,
starting and draining ones included), flaps (scale changes whose direction reverses the
previous change less than 5 minutes after it) and the time under-provisioned (seconds
in which the ready pods' capacity at the SLO is below the arrival rate). With
`--plots DIR` it draws each trace's replicas against load for the three policies.

The service (per-pod figures from docs/benchmarks.md, "Serving throughput": SmolLM2-135M,
bf16, our server over HTTP, 16 new tokens a request): a pod with c requests in it
completes X(c) requests/s, interpolated linearly through X(1) = 14.4/16, X(8) = 69.4/16
and X(32) = 118.9/16 (32 KV-cache slots; beyond them requests wait, and beyond 64
waiting they get 429, a miss). Requests leave a pod first in, first out, so a request's
latency is its wait plus its service, about c / X(c) (Little's law: 1.84 s at c = 8,
4.3 s at c = 32). A new pod is Ready `--start-seconds` after it is created (model load)
and serves at half speed for its first `--warmup-seconds`. Arrivals are Poisson with the
trace's rate, spread evenly over the ready pods (kube-proxy's random choice, as a
fluid). A removed pod stops receiving requests at once and drains what it holds.

Policies, all with the same metric (in-flight requests per pod) and target
(`--target`, 8):
- hpa: the port in `lmoperator.autoscale.hpa`, a Pods metric read every 15 s (the
  controller's sync period), starting pods without metrics (missing), default behavior
  (300 s scale-down stabilization, 100 %/15 s and 4 pods/15 s up, 100 %/15 s down).
- kpa: the port in `lmoperator.autoscale.kpa`, the fleet's concurrency sampled every
  second, 60 s and 6 s windows, a decision every 2 s, target utilization 100 % so that
  its target is the same 8 (Knative's default of 70 % would aim at 5.6).
- ours: `lmoperator.autoscale.policy` with the configuration in `OURS` below, frozen
  before any run: a decision every 5 s, in-flight and waiting requests (the server's
  saturation signal), 120 s scale-down stabilization, the predictive term.
Scale-down removes not-ready pods first, then, for the baselines, the newest (the
ReplicaSet's ranking), for ours the least loaded (it sets pod deletion costs).

Traces (rates in requests/s; every one is synthetic, generated from the seed):
- diurnal: three days of a daily cycle (2 at night to 30 at the afternoon peak) with
  minute-scale noise; scored on day 3 only, after every policy has run days 1 and 2
  (so ours has the two periods of history its seasonal forecast needs).
- spike: 3 req/s, a sudden 10x spike to 30 req/s for 15 minutes, back to 3.
- ramp: 2 req/s, a slow ramp to 40 req/s over an hour, then flat.
- square: an on/off square wave, 10 minutes at 20 req/s, 10 minutes at 1 req/s.
- heavy_tailed (held out: never used while choosing `OURS`): a base of 4 req/s plus
  bursts that start as a Poisson process (one per 5 minutes on average), each adding a
  Pareto-distributed (shape 1.5) rate for an exponentially distributed time (mean
  90 s). No published production LLM request trace ships in a package installed here,
  so this synthetic heavy-tailed trace stands in for one.

Usage: python bench/autoscale_sim.py [--plots docs] [--traces spike,ramp] [--quick]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmoperator.autoscale import hpa, kpa
from lmoperator.autoscale.policy import (
    MetricTarget,
    PodReport,
    PolicyConfig,
    PredictiveConfig,
    ServiceAutoscaler,
    Signal,
)

# Requests/s a pod completes with c requests in it (16 new tokens a request).
CURVE_C = [0.0, 1.0, 8.0, 32.0]
CURVE_X = [0.0, 14.4 / 16, 69.4 / 16, 118.9 / 16]
SLOTS = 32
MAX_WAITING = 64
MIN_REPLICAS, MAX_REPLICAS = 1, 60
FLAP_WINDOW = 300.0

# Our configuration, frozen before the runs (chosen on diurnal, spike, ramp and square;
# heavy_tailed is held out).
OURS = {
    "stable_window_seconds": 60.0,
    "panic_window_seconds": 6.0,
    "panic_threshold": 2.0,
    "tolerance": 0.1,
    "scale_up_max_rate": 1000.0,
    "scale_down_max_rate": 1.25,
    "scale_down_stabilization_seconds": 120.0,
    "scrape_interval_seconds": 5.0,
    "warmup_seconds": 20.0,
    "queue_target": 8.0,
    "predictive_horizon_seconds": 60.0,
}


def rate_at(c: float) -> float:
    """X(c): requests/s completed by a pod holding c requests."""
    c = min(c, float(SLOTS))
    i = bisect.bisect_right(CURVE_C, c) - 1
    if i >= len(CURVE_C) - 1:
        return CURVE_X[-1]
    c0, c1 = CURVE_C[i], CURVE_C[i + 1]
    return CURVE_X[i] + (CURVE_X[i + 1] - CURVE_X[i]) * (c - c0) / (c1 - c0)


def slo_capacity(slo: float) -> float:
    """Requests/s a pod sustains with latency c / X(c) within the SLO."""
    lo, hi = 0.01, float(SLOTS)
    if hi / rate_at(hi) <= slo:
        return rate_at(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if mid / rate_at(mid) <= slo:
            lo = mid
        else:
            hi = mid
    return rate_at(lo)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# -- traces ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    name: str
    rates: list[float]  # requests/s per step
    dt: float
    score_from: float  # seconds: the part of the trace that is scored
    held_out: bool = False


def _noise(rng: random.Random, n: int, every: int, sigma: float) -> list[float]:
    """Multiplicative noise, a new log-normal factor every `every` steps (AR(1))."""
    out, x = [], 0.0
    for i in range(n):
        if i % every == 0:
            x = 0.7 * x + rng.gauss(0, sigma)
        out.append(math.exp(x))
    return out


def make_traces(seed: int, quick: bool) -> dict[str, Trace]:
    rng = random.Random(seed)
    traces: dict[str, Trace] = {}

    dt = 2.0
    days = 1 if quick else 3
    n = int(days * 86400 / dt)
    noise = _noise(rng, n, int(60 / dt), 0.08)
    rates = []
    for i in range(n):
        t = i * dt
        phase = (t % 86400) / 86400  # 0 = midnight
        shape = 0.5 - 0.5 * math.cos(2 * math.pi * (phase - 0.1))  # peak about 14:24
        rates.append((2 + 28 * shape**1.5) * noise[i])
    traces["diurnal"] = Trace("diurnal", rates, dt, (days - 1) * 86400.0)

    dt = 1.0
    n = int(5400 / dt)
    traces["spike"] = Trace(
        "spike", [30.0 if 1800 <= i * dt < 2700 else 3.0 for i in range(n)], dt, 0.0
    )

    n = int(7200 / dt)
    ramp = []
    for i in range(n):
        t = i * dt
        ramp.append(2.0 if t < 900 else min(40.0, 2.0 + 38.0 * (t - 900) / 3600))
    traces["ramp"] = Trace("ramp", ramp, dt, 0.0)

    traces["square"] = Trace(
        "square", [20.0 if (i * dt // 600) % 2 == 0 else 1.0 for i in range(n)], dt, 0.0
    )

    heavy = [4.0] * n
    t = rng.expovariate(1 / 300)
    while t < n * dt:
        height = min(60.0, 2.0 * rng.paretovariate(1.5))
        length = rng.expovariate(1 / 90)
        for i in range(int(t / dt), min(n, int((t + length) / dt))):
            heavy[i] += height
        t += rng.expovariate(1 / 300)
    traces["heavy_tailed"] = Trace("heavy_tailed", heavy, dt, 0.0, held_out=True)
    return traces


# -- the service ----------------------------------------------------------------------


@dataclass
class SimPod:
    name: str
    created: float
    ready_at: float
    draining: bool = False
    cohorts: deque[list[float]] = field(default_factory=deque)  # [arrival time, amount]
    n: float = 0.0
    in_flight: float = 0.0  # the step's time-averaged request count, what a pod reports


@dataclass
class Result:
    requests: float = 0.0
    hits: float = 0.0
    replica_seconds: float = 0.0
    under_seconds: float = 0.0
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time, direction)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)  # t, rate, pods
    reasons: dict[str, int] = field(default_factory=dict)

    def flaps(self) -> int:
        count = 0
        for (t0, d0), (t1, d1) in zip(self.changes, self.changes[1:], strict=False):
            if d1 != d0 and t1 - t0 < FLAP_WINDOW:
                count += 1
        return count


Decider = Callable[[float, list[SimPod]], int | None]


class Service:
    def __init__(self, args: argparse.Namespace, least_loaded_first: bool) -> None:
        self.args = args
        self.pods: list[SimPod] = []
        self.counter = 0
        self.least_loaded_first = least_loaded_first
        self.rejected = 0.0
        for _ in range(MIN_REPLICAS):
            self._add(-10_000.0, ready=True)

    def _add(self, now: float, ready: bool = False) -> None:
        self.counter += 1
        ready_at = now if ready else now + self.args.start_seconds
        self.pods.append(SimPod(f"pod-{self.counter}", now, ready_at))

    @property
    def spec_replicas(self) -> int:
        return sum(1 for p in self.pods if not p.draining)

    def scale_to(self, now: float, desired: int) -> None:
        current = self.spec_replicas
        for _ in range(desired - current):
            self._add(now)
        if desired < current:
            live = [p for p in self.pods if not p.draining]
            if self.least_loaded_first:
                live.sort(key=lambda p: (p.ready_at <= now, p.n))
            else:
                live.sort(key=lambda p: (p.ready_at <= now, -p.ready_at))
            for p in live[: current - desired]:
                p.draining = True

    def step(self, now: float, dt: float, arrivals: float, result: Result, score: bool) -> None:
        ready = [p for p in self.pods if not p.draining and p.ready_at <= now]
        if score:
            result.requests += arrivals
        if ready:
            share = arrivals / len(ready)
            for p in ready:
                room = SLOTS + MAX_WAITING - p.n
                take = min(share, max(0.0, room))
                if take > 0:
                    p.cohorts.append([now, take])
                    p.n += take
                # The excess is answered 429: counted in `requests`, never a hit.
        slo = self.args.slo_seconds
        warm = self.args.warmup_seconds
        for p in self.pods:
            if p.n <= 0 or p.ready_at > now:
                p.in_flight = p.n
                continue
            start_n = p.n
            speed = 0.5 if now - p.ready_at < warm else 1.0
            budget = rate_at(p.n) * dt * speed
            served = 0.0
            per_request = dt / budget if budget > 0 else dt
            while budget > 1e-12 and p.cohorts:
                cohort = p.cohorts[0]
                amount = min(cohort[1], budget)
                served += amount
                done_at = now + served * per_request
                if score and done_at - cohort[0] <= slo:
                    result.hits += amount
                cohort[1] -= amount
                budget -= amount
                p.n -= amount
                if cohort[1] <= 1e-12:
                    p.cohorts.popleft()
            if p.n < 1e-9:
                p.n = 0.0
                p.cohorts.clear()
            # Requests leave through the step: its average count is about the mean of
            # the counts at its start and end (a server's averaged in-flight gauge).
            p.in_flight = (start_n + p.n) / 2
        self.pods = [p for p in self.pods if not (p.draining and p.n <= 0)]


# -- the policies ---------------------------------------------------------------------


def ours_decider(args: argparse.Namespace) -> tuple[Decider, float, Result]:
    cfg = PolicyConfig(
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        metrics=(
            MetricTarget(Signal.IN_FLIGHT_REQUESTS, args.target),
            MetricTarget(Signal.QUEUE_DEPTH, OURS["queue_target"]),
        ),
        stable_window_seconds=OURS["stable_window_seconds"],
        panic_window_seconds=OURS["panic_window_seconds"],
        panic_threshold=OURS["panic_threshold"],
        tolerance=OURS["tolerance"],
        scale_up_max_rate=OURS["scale_up_max_rate"],
        scale_down_max_rate=OURS["scale_down_max_rate"],
        scale_down_stabilization_seconds=OURS["scale_down_stabilization_seconds"],
        scrape_interval_seconds=OURS["scrape_interval_seconds"],
        warmup_seconds=OURS["warmup_seconds"],
        predictive=PredictiveConfig(horizon_seconds=OURS["predictive_horizon_seconds"]),
    )
    policy = ServiceAutoscaler(cfg)
    result = Result()

    def decide(now: float, pods: list[SimPod]) -> int | None:
        reports = []
        current = 0
        for p in pods:
            if p.draining:
                continue
            current += 1
            ready = p.ready_at <= now
            reports.append(
                PodReport(
                    name=p.name,
                    phase="Running",
                    ready=ready,
                    created_at=p.created,
                    ready_at=p.ready_at if ready else None,
                    scraped_at=now if ready else None,
                    values={
                        Signal.IN_FLIGHT_REQUESTS: p.in_flight,
                        Signal.QUEUE_DEPTH: max(0.0, p.in_flight - SLOTS),
                    }
                    if ready
                    else {},
                )
            )
        d = policy.decide(now, current, reports)
        result.reasons[d.reason.value] = result.reasons.get(d.reason.value, 0) + 1
        return d.desired

    return decide, OURS["scrape_interval_seconds"], result


def hpa_decider(args: argparse.Namespace) -> tuple[Decider, float, Result]:
    controller = hpa.HorizontalPodAutoscaler(MIN_REPLICAS, MAX_REPLICAS)
    result = Result()

    def decide(now: float, pods: list[SimPod]) -> int | None:
        live = [p for p in pods if not p.draining]
        samples = [hpa.HpaPod(p.name, p.in_flight if p.ready_at <= now else None) for p in live]
        d = controller.decide(now, len(live), [(samples, args.target)])
        result.reasons[d.reason] = result.reasons.get(d.reason, 0) + 1
        return d.desired

    return decide, hpa.DEFAULT_SYNC_PERIOD_SECONDS, result


class KpaRunner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.window = kpa.WindowAverage()
        spec = kpa.DeciderSpec(target_value=args.target)  # target utilization 100 %
        self.decider = kpa.KnativeAutoscaler.create(spec, MIN_REPLICAS, 0.0)
        self.stable = spec.stable_window
        self.panic = spec.stable_window * kpa.DEFAULT_PANIC_WINDOW_PERCENTAGE / 100
        self.last_second = -1

    def observe(self, now: float, pods: list[SimPod]) -> None:
        second = math.floor(now)
        if second != self.last_second:
            self.last_second = second
            total = sum(p.in_flight for p in pods if not p.draining and p.ready_at <= now)
            self.window.record(now, total)


def kpa_decider(args: argparse.Namespace, runner: KpaRunner) -> tuple[Decider, float, Result]:
    result = Result()

    def decide(now: float, pods: list[SimPod]) -> int | None:
        ready = sum(1 for p in pods if not p.draining and p.ready_at <= now)
        stable = runner.window.average(now, runner.stable)
        panic = runner.window.average(now, runner.panic)
        desired = runner.decider.scale(now, ready, stable, panic)
        if desired is None:
            return None
        return max(MIN_REPLICAS, min(MAX_REPLICAS, desired))

    return decide, kpa.DEFAULT_TICK_SECONDS, result


# -- a run ----------------------------------------------------------------------------


def run(trace: Trace, policy: str, args: argparse.Namespace) -> Result:
    rng = random.Random(args.seed * 1000 + sum(map(ord, trace.name)))
    service = Service(args, least_loaded_first=policy == "ours")
    runner = None
    if policy == "ours":
        decide, period, result = ours_decider(args)
    elif policy == "hpa":
        decide, period, result = hpa_decider(args)
    else:
        runner = KpaRunner(args)
        decide, period, result = kpa_decider(args, runner)
    capacity = slo_capacity(args.slo_seconds)
    next_decision = 0.0
    last_replicas = service.spec_replicas
    dt = trace.dt
    sample_every = max(1, int(60 / dt))
    for i, rate in enumerate(trace.rates):
        now = i * dt
        score = now >= trace.score_from
        arrivals = float(poisson(rng, rate * dt))
        if runner is not None:
            runner.observe(now, service.pods)
        if now >= next_decision:
            next_decision = now + period
            desired = decide(now, service.pods)
            if desired is not None and desired != service.spec_replicas:
                direction = 1 if desired > service.spec_replicas else -1
                if score:
                    result.changes.append((now, direction))
                service.scale_to(now, desired)
        service.step(now, dt, arrivals, result, score)
        if score:
            result.replica_seconds += len(service.pods) * dt
            ready = sum(1 for p in service.pods if not p.draining and p.ready_at <= now)
            if ready * capacity < rate:
                result.under_seconds += dt
            if i % sample_every == 0:
                result.timeline.append((now - trace.score_from, rate, service.spec_replicas))
        last_replicas = service.spec_replicas
    del last_replicas
    return result


def summarise(result: Result) -> dict[str, Any]:
    return {
        "slo_attainment": round(result.hits / result.requests, 4) if result.requests else None,
        "replica_seconds": round(result.replica_seconds),
        "flaps": result.flaps(),
        "scale_changes": len(result.changes),
        "under_provisioned_seconds": round(result.under_seconds),
    }


def judge(per_policy: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours, h, k = per_policy["ours"], per_policy["hpa"], per_policy["kpa"]
    best_slo = max(h["slo_attainment"], k["slo_attainment"])
    cost_ratio = ours["replica_seconds"] / h["replica_seconds"]
    return {
        "slo_at_least_best_baseline": ours["slo_attainment"] >= best_slo,
        "slo_margin": round(ours["slo_attainment"] - best_slo, 4),
        "cost_vs_hpa": round(cost_ratio, 3),
        "cost_at_most_85pct_of_hpa": cost_ratio <= 0.85,
        "flaps_not_more_than_either": ours["flaps"] <= min(h["flaps"], k["flaps"]),
    }


def plot(trace: Trace, results: dict[str, Result], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=80)
    colours = {"hpa": "tab:orange", "kpa": "tab:green", "ours": "tab:blue"}
    hours = trace.name == "diurnal"
    scale = 3600 if hours else 60
    unit = "hours" if hours else "minutes"
    for name in ("kpa", "hpa", "ours"):  # ours drawn last, on top
        result = results[name]
        xs = [t / scale for t, _, _ in result.timeline]
        ax.step(xs, [r for _, _, r in result.timeline], where="post", label=name,
                color=colours[name], linewidth=1.4 if name == "ours" else 0.8,
                alpha=1.0 if name == "ours" else 0.7)  # fmt: skip
    ax.set_xlabel(unit)
    ax.set_ylabel("replicas")
    load = ax.twinx()
    any_result = next(iter(results.values()))
    load.plot([t / scale for t, _, _ in any_result.timeline],
              [r for _, r, _ in any_result.timeline], color="grey", alpha=0.4,
              linewidth=1, label="load")  # fmt: skip
    load.set_ylabel("requests/s (grey)")
    ax.set_title(f"{trace.name}: replicas against load" + (" (held out)" if trace.held_out else ""))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="diurnal,spike,ramp,square,heavy_tailed")
    parser.add_argument("--target", type=float, default=8.0, help="in-flight requests per pod")
    parser.add_argument("--slo-seconds", type=float, default=3.0)
    parser.add_argument("--start-seconds", type=float, default=40.0)
    parser.add_argument("--warmup-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plots", type=Path, default=None, help="write PNGs into this folder")
    parser.add_argument("--quick", action="store_true", help="one day of diurnal, not three")
    args = parser.parse_args(argv)

    traces = make_traces(args.seed, args.quick)
    wanted = [t for t in args.traces.split(",") if t]
    unknown = [t for t in wanted if t not in traces]
    if unknown:
        parser.error(f"unknown trace(s) {unknown}; choose from {sorted(traces)}")
    started = time.monotonic()
    out: dict[str, Any] = {
        "bench": "autoscale_sim",
        "target_in_flight_per_pod": args.target,
        "slo_seconds": args.slo_seconds,
        "pod_start_seconds": args.start_seconds,
        "pod_capacity_at_slo_rps": round(slo_capacity(args.slo_seconds), 3),
        "ours_config": OURS,
        "traces": {},
    }
    for name in wanted:
        trace = traces[name]
        results = {p: run(trace, p, args) for p in ("hpa", "kpa", "ours")}
        per_policy = {p: summarise(r) for p, r in results.items()}
        per_policy["ours"]["reasons"] = results["ours"].reasons
        entry = {"held_out": trace.held_out, **per_policy, "targets": judge(per_policy)}
        out["traces"][name] = entry
        print(f"{name}: {json.dumps(entry)}", file=sys.stderr, flush=True)
        if args.plots is not None:
            args.plots.mkdir(parents=True, exist_ok=True)
            plot(trace, results, args.plots / f"autoscaling-{name}.png")
    out["all_targets_met"] = all(
        all(v for k, v in e["targets"].items() if isinstance(v, bool))
        for e in out["traces"].values()
    )
    out["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
