"""Who trains together next: the rendezvous' decision, as a pure function.

Kept free of torch and of the store so that every rule is unit-tested directly.

The unit that joins and leaves is a pod. A pod may run several training processes
(`worker.processesPerPod`); each registers on its own, but a pod takes part in a round
only once all of its processes are live, and leaves it as a whole when one of them
leaves or is lost. Ranks are pod-major: global rank = pod position x processes per pod
+ local rank. min/max nodes and the expected world size count pods.

Warm spares register too, as standby: they count for nothing here until the operator
promotes one (the rendezvous then sees it as a pod that joined, with the index it was
given), so a promotion costs exactly one round, like any join.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    slot: int  # registration order in the store; unique per worker process
    index: int  # the pod's elasticlm.io/index
    pod: str = ""
    expected: int = 0  # spec.replicas when the pod was created
    leaving: bool = False
    # The pod's processes: this one's local rank, how many there are, and an id shared
    # by them (unique per start of the pod; "" for a pod of one process).
    local_rank: int = 0
    local_size: int = 1
    group: str = ""
    # A warm spare standing by: registered and loaded, never in a round until promoted.
    spare: bool = False

    def with_leaving(self) -> Member:
        return dataclasses.replace(self, leaving=True)

    @property
    def unit(self) -> str:
        """The pod this process belongs to: whose processes join and leave together."""
        return self.group or f"slot:{self.slot}"


@dataclass(frozen=True)
class Pod:
    """The live processes of one pod, in local-rank order."""

    members: tuple[Member, ...]

    @property
    def index(self) -> int:
        return self.members[0].index

    @property
    def complete(self) -> bool:
        """Every local rank of the pod is registered and alive, once each."""
        size = self.members[0].local_size
        return tuple(m.local_rank for m in self.members) == tuple(range(size))

    @property
    def leaving(self) -> bool:
        return any(m.leaving for m in self.members)

    @property
    def spare(self) -> bool:
        return any(m.spare for m in self.members)

    @property
    def slots(self) -> tuple[int, ...]:
        return tuple(m.slot for m in self.members)

    @property
    def expected(self) -> int:
        return max(m.expected for m in self.members)


def pods_of(members: list[Member] | tuple[Member, ...]) -> list[Pod]:
    """Processes grouped into their pods, each pod's in local-rank order."""
    by_unit: dict[str, list[Member]] = {}
    for m in members:
        by_unit.setdefault(m.unit, []).append(m)
    return [Pod(tuple(sorted(ms, key=lambda m: (m.local_rank, m.slot)))) for ms in by_unit.values()]


def global_rank(pod_rank: int, local_rank: int, processes_per_pod: int) -> int:
    """Pod-major ranks: a pod's processes hold consecutive ranks."""
    if not 0 <= local_rank < processes_per_pod:
        raise ValueError(f"local rank {local_rank} outside 0..{processes_per_pod - 1}")
    return pod_rank * processes_per_pod + local_rank


@dataclass(frozen=True)
class MembershipView:
    live: tuple[Member, ...]
    current_round: int
    current_members: tuple[int, ...]  # slots, rank order; empty: none or stopped
    current_failed: bool  # a member's collectives failed in the current round
    current_formed: bool  # every member formed the current round's process group
    since_round: float  # seconds since the current round was published
    since_first_seen: float  # seconds since the first worker registered
    since_last_change: float  # seconds since the last registration, leave or death
    done: bool = False  # training reached its steps


@dataclass(frozen=True)
class RoundDecision:
    members: tuple[int, ...]
    reason: str
    stop: bool = False


def rank_order(members: list[Member] | tuple[Member, ...]) -> list[Member]:
    """Rank 0 is the lowest pod index, so the operator knows whom to scrape."""
    return sorted(members, key=lambda m: (m.index, m.slot))


def pod_order(pods: list[Pod]) -> list[Pod]:
    """Pods by index (rank 0 is local rank 0 of the lowest index), then registration."""
    return sorted(pods, key=lambda p: (p.index, min(p.slots)))


def decide_round(
    view: MembershipView,
    min_nodes: int,
    max_nodes: int,
    settle: float,
    form_timeout: float,
    start_timeout: float,
) -> RoundDecision | None:
    """The next round to publish, or None to keep the current one."""
    if view.done:
        return None
    # Only whole pods train: every process of the pod live, none of them leaving, and no
    # spare until it is promoted.
    eligible = pod_order(
        [p for p in pods_of(view.live) if p.complete and not p.leaving and not p.spare]
    )
    eligible = eligible[:max_nodes]
    slots = tuple(s for p in eligible for s in p.slots)
    live_slots = {m.slot for m in view.live}
    current = view.current_members

    if not current:
        # First start (or a restart after everyone left): wait for the world size the
        # operator asked for, or settle for min-nodes after the start timeout.
        if not eligible:
            return None
        target = min(max_nodes, max(min_nodes, max(p.expected for p in eligible)))
        if len(eligible) >= target:
            return RoundDecision(slots, f"start with {_pods(eligible)}")
        if len(eligible) >= min_nodes and view.since_first_seen >= start_timeout:
            return RoundDecision(
                slots,
                f"start with {len(eligible)} of {target} expected workers after "
                f"waiting {start_timeout:g}s",
            )
        return None

    # A process lost takes its whole pod out: the pod's slots are no longer all live.
    gone = [s for s in current if s not in live_slots]
    in_round = [p for p in pods_of(view.live) if set(p.slots) & set(current)]
    leaving = [p for p in in_round if p.leaving]
    joined = [p for p in eligible if not set(p.slots) & set(current)]

    if gone or view.current_failed:
        if len(eligible) < min_nodes:
            return None  # survivors wait for replacements
        why = f"{len(gone)} worker process(es) lost" if gone else "a collective failed"
        return RoundDecision(slots, f"{why}; continue with {_pods(eligible)}")
    if not view.current_formed and view.since_round >= form_timeout:
        return RoundDecision(slots, f"round not formed within {form_timeout:g}s")
    if not view.current_formed or view.since_last_change < settle:
        return None  # one change at a time; let joins/leaves arriving together batch up
    if leaving:
        if not eligible:
            return RoundDecision((), "every worker is leaving: save and stop", stop=True)
        if len(eligible) < min_nodes:
            return None
        return RoundDecision(slots, f"{len(leaving)} worker(s) leaving; {_pods(eligible)} remain")
    if joined:
        return RoundDecision(slots, f"{len(joined)} worker(s) joined; {_pods(eligible)} in all")
    return None


def _pods(pods: list[Pod]) -> str:
    """'3 workers', or '2 workers x 2 processes' when pods run several."""
    size = max((len(p.members) for p in pods), default=1)
    return f"{len(pods)} workers" + (f" x {size} processes" if size > 1 else "")
