"""Who trains together next: the rendezvous' decision, as a pure function.

Kept free of torch and of the store so that every rule is unit-tested directly.
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

    def with_leaving(self) -> Member:
        return dataclasses.replace(self, leaving=True)


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
    eligible = rank_order([m for m in view.live if not m.leaving])[:max_nodes]
    slots = tuple(m.slot for m in eligible)
    live_slots = {m.slot for m in view.live}
    current = view.current_members

    if not current:
        # First start (or a restart after everyone left): wait for the world size the
        # operator asked for, or settle for min-nodes after the start timeout.
        if not eligible:
            return None
        target = min(max_nodes, max(min_nodes, max(m.expected for m in eligible)))
        if len(eligible) >= target:
            return RoundDecision(slots, f"start with {len(slots)} workers")
        if len(eligible) >= min_nodes and view.since_first_seen >= start_timeout:
            return RoundDecision(
                slots,
                f"start with {len(slots)} of {target} expected workers after "
                f"waiting {start_timeout:g}s",
            )
        return None

    gone = [s for s in current if s not in live_slots]
    leaving = [m.slot for m in view.live if m.leaving and m.slot in current]
    joined = [s for s in slots if s not in current]

    if gone or view.current_failed:
        if len(eligible) < min_nodes:
            return None  # survivors wait for replacements
        why = f"{len(gone)} worker(s) lost" if gone else "a collective failed"
        return RoundDecision(slots, f"{why}; continue with {len(slots)} workers")
    if not view.current_formed and view.since_round >= form_timeout:
        return RoundDecision(slots, f"round not formed within {form_timeout:g}s")
    if not view.current_formed or view.since_last_change < settle:
        return None  # one change at a time; let joins/leaves arriving together batch up
    if leaving:
        if not eligible:
            return RoundDecision((), "every worker is leaving: save and stop", stop=True)
        if len(eligible) < min_nodes:
            return None
        return RoundDecision(slots, f"{len(leaving)} worker(s) leaving; {len(slots)} remain")
    if joined:
        return RoundDecision(slots, f"{len(joined)} worker(s) joined; {len(slots)} in all")
    return None
