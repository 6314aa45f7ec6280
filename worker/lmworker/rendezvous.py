"""The per-job rendezvous: a c10d TCPStore server plus the membership authority.

`python -m lmworker.rendezvous --host POD_IP --port 29400 --min-nodes 1 --max-nodes 3
 --secret-file /var/run/elasticlm/rdzv/token`

With a secret (the operator always mounts one), the TCPStore listens on loopback and
the pod's address belongs to an authenticating proxy (`lmworker.storeauth`): a client
must prove it holds the job's secret before a byte reaches the store.

Workers register in the store, heartbeat, and ask to leave there (see
`lmworker.elastic`). This process is the only one that decides who trains together: it
publishes numbered *rounds* (member list in rank order). Because there is a single
authority, two groups can never train side by side (the split brain torchrun's
agents can reach with aggressive keep-alive), and a membership change costs one
round: survivors keep their processes and state, newcomers receive it in place.

Store layout (all values are bytes):
  epoch                 random id of this store; a changed id means the store restarted
  members/seq           counter; a worker's slot is the value its `add` returned
  member/<slot>         JSON {index, pod, expected, local_rank, local_size, group, spare};
                        a pod of several processes registers each, sharing `group`
  promote/<pod>         JSON {index, expected}: the spare pod was promoted to a worker
                        (written by its own heartbeat thread once the operator said so)
  hb/<slot>             counter the worker's heartbeat thread bumps
  leave/<slot>          present once the worker asked to leave (SIGTERM)
  dead/<slot>           present once the rendezvous gave the worker up
  failed/<round>        counter: members whose collectives failed in that round
  checkin               counter: a request that every live worker acknowledges
  ack/<n>/<slot>        present once that worker answered check-in request n
  formed/<round>        counter: members that formed the round's process group
  round                 counter: the newest round (0: none yet)
  round/<r>             JSON {round, members, indexes, stop, reason, known}
  done                  JSON written by rank 0 when training reached its steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from lmworker.config import EXIT_PERMANENT, SECRET_FILE_ENV
from lmworker.rounds import Member, MembershipView, RoundDecision, decide_round
from lmworker.storeauth import AuthError, AuthProxy, read_secret

if TYPE_CHECKING:
    from torch.distributed import Store

log = logging.getLogger("lmworker.rendezvous")


@dataclass
class Timing:
    """How fast membership changes are noticed; all in seconds."""

    poll: float = 0.05
    # A worker whose heartbeat counter stops moving this long is gone.
    heartbeat_timeout: float = 3.0
    # Joins and leaves arriving this close together form one round.
    settle: float = 0.25
    # How long live workers get to answer a check-in after a failure.
    checkin_timeout: float = 0.5
    # A round whose members have not all formed it by then is replaced.
    form_timeout: float = 15.0
    # At the first start, wait this long for the expected workers before starting
    # with at least min-nodes.
    start_timeout: float = 30.0


@dataclass
class _Tracked:
    member: Member
    hb: int = -1
    hb_changed: float = field(default_factory=time.monotonic)
    dead: bool = False


class Coordinator:
    """Watches registrations and heartbeats; publishes rounds."""

    def __init__(self, store: Store, min_nodes: int, max_nodes: int, timing: Timing) -> None:
        self.store = store
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self.timing = timing
        self.tracked: dict[int, _Tracked] = {}
        self.round = 0
        self.members: tuple[int, ...] = ()
        self.round_started = time.monotonic()
        self.round_formed = True
        self.checkins = 0
        self.first_seen = 0.0
        self.last_change = 0.0
        self.stopped = False
        self.rounds_published = 0
        self.epoch = uuid.uuid4().hex
        store.set("epoch", self.epoch)

    # -- observation ---------------------------------------------------------------

    def _has(self, key: str) -> bool:
        return bool(self.store.check([key]))

    def _counter(self, key: str) -> int:
        return int(self.store.add(key, 0))

    def scan(self, now: float) -> None:
        """Read new registrations, heartbeats and leave requests."""
        seq = self._counter("members/seq")
        for slot in range(1, seq + 1):
            if slot in self.tracked or not self._has(f"member/{slot}"):
                continue
            info = json.loads(self.store.get(f"member/{slot}"))
            member = Member(
                slot=slot,
                index=int(info["index"]),
                pod=str(info.get("pod", "")),
                expected=int(info.get("expected", 0)),
                local_rank=int(info.get("local_rank", 0)),
                local_size=int(info.get("local_size", 1)),
                group=str(info.get("group", "")),
                spare=bool(info.get("spare", False)),
            )
            self.tracked[slot] = _Tracked(member=member, hb_changed=now)
            if not self.first_seen:
                self.first_seen = now
            self.last_change = now
            log.info(
                "worker %s (index %d, local rank %d of %d) registered as slot %d",
                member.pod,
                member.index,
                member.local_rank,
                member.local_size,
                slot,
            )
        for slot, t in self.tracked.items():
            if t.dead:
                continue
            hb = self._counter(f"hb/{slot}")
            if hb != t.hb:
                t.hb, t.hb_changed = hb, now
            elif now - t.hb_changed > self.timing.heartbeat_timeout:
                self.mark_dead(slot, "heartbeat stopped")
            if t.member.spare and self._has(f"promote/{t.member.pod}"):
                promotion = json.loads(self.store.get(f"promote/{t.member.pod}"))
                t.member = dataclasses.replace(
                    t.member,
                    spare=False,
                    index=int(promotion["index"]),
                    expected=int(promotion.get("expected", 0)),
                )
                self.last_change = now
                log.info(
                    "spare %s (slot %d) promoted to index %d", t.member.pod, slot, t.member.index
                )
            if not t.member.leaving and self._has(f"leave/{slot}"):
                t.member = t.member.with_leaving()
                self.last_change = now
                log.info("slot %d (%s) asked to leave", slot, t.member.pod)

    def check_in(self) -> None:
        """After a failure: whoever does not answer quickly is gone."""
        self.checkins += 1
        n = self.checkins
        self.store.set("checkin", str(n))
        deadline = time.monotonic() + self.timing.checkin_timeout
        waiting = {s for s, t in self.tracked.items() if not t.dead}
        while waiting and time.monotonic() < deadline:
            waiting = {s for s in waiting if not self._has(f"ack/{n}/{s}")}
            time.sleep(0.01)
        for slot in waiting:
            self.mark_dead(slot, "missed the check-in")

    def mark_dead(self, slot: int, why: str) -> None:
        """Final for this slot: a worker that was only slow re-registers under a new one."""
        t = self.tracked[slot]
        t.dead = True
        self.last_change = time.monotonic()
        self.store.set(f"dead/{slot}", why)
        log.info("slot %d (%s): %s", slot, t.member.pod, why)

    def view(self, now: float) -> MembershipView:
        failed = self.round > 0 and self._counter(f"failed/{self.round}") > 0
        formed = self.round == 0 or self._counter(f"formed/{self.round}") >= len(self.members)
        return MembershipView(
            live=tuple(t.member for t in self.tracked.values() if not t.dead),
            current_round=self.round,
            current_members=self.members,
            current_failed=failed,
            current_formed=formed,
            since_round=now - self.round_started,
            since_first_seen=now - self.first_seen if self.first_seen else 0.0,
            since_last_change=now - self.last_change,
            done=self._has("done"),
        )

    # -- decisions -----------------------------------------------------------------

    def publish(self, decision: RoundDecision, now: float) -> None:
        self.round += 1
        self.members = decision.members
        self.round_started = now
        indexes = [self.tracked[s].member.index for s in decision.members]
        body = {
            "round": self.round,
            "members": list(decision.members),
            "indexes": indexes,
            "stop": decision.stop,
            "reason": decision.reason,
        }
        self.store.set(f"round/{self.round}", json.dumps(body))
        self.store.add("round", 1)
        self.rounds_published += 1
        self.stopped = decision.stop
        log.info(
            "round %d: %s (world size %d): %s",
            self.round,
            "stop" if decision.stop else f"indexes {indexes}",
            len(decision.members),
            decision.reason,
        )

    def tick(self) -> None:
        now = time.monotonic()
        self.scan(now)
        view = self.view(now)
        if view.current_failed and not self.stopped:
            self.check_in()
            view = self.view(time.monotonic())
        decision = decide_round(
            view,
            self.min_nodes,
            self.max_nodes,
            self.timing.settle,
            self.timing.form_timeout,
            self.timing.start_timeout,
        )
        if decision is not None:
            self.publish(decision, time.monotonic())

    def live_workers(self) -> int:
        return sum(1 for t in self.tracked.values() if not t.dead)


def serve(
    host: str,
    port: int,
    min_nodes: int,
    max_nodes: int,
    timing: Timing,
    secret: bytes | None = None,
) -> int:
    """Serve the store and run the coordinator until SIGTERM and the workers are gone.

    With `secret`, the store listens on loopback only and the pod's address belongs to
    the authenticating proxy of `lmworker.storeauth`.
    """
    from torch.distributed import TCPStore

    # TCPStore binds every address by itself; pods that share a machine's ports (as on
    # devcluster) need it bound to this pod's address only, so hand it a bound socket.
    public = socket.create_server((host, port), backlog=1024)
    proxy: AuthProxy | None = None
    if secret is None:
        store_host, store_port, store_listener = host, port, public
    else:
        store_listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        store_host, store_port = "127.0.0.1", store_listener.getsockname()[1]
    store = TCPStore(
        store_host,
        store_port,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=30),
        use_libuv=True,
        master_listen_fd=store_listener.detach(),
    )
    coordinator = Coordinator(store, min_nodes, max_nodes, timing)
    if secret is not None:
        proxy = AuthProxy(public, (store_host, store_port), secret).start()
    stopping = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        # Keep serving while workers still need the store to leave cleanly.
        log.info("signal %d: serving until the workers are gone", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(
        json.dumps(
            {
                "event": "listening",
                "host": host,
                "port": port,
                "epoch": coordinator.epoch,
                "authenticated": proxy is not None,
            }
        ),
        flush=True,
    )
    stop_deadline: float | None = None
    while True:
        coordinator.tick()
        if stopping.is_set():
            stop_deadline = stop_deadline or time.monotonic() + 60.0
            if coordinator.live_workers() == 0 or time.monotonic() > stop_deadline:
                return 0
        time.sleep(timing.poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmworker.rendezvous", description=__doc__)
    parser.add_argument("--host", required=True, help="address to listen on (the pod IP)")
    parser.add_argument("--port", type=int, default=29400)
    parser.add_argument("--min-nodes", type=int, default=1)
    parser.add_argument("--max-nodes", type=int, default=1)
    parser.add_argument("--heartbeat-timeout", type=float, default=Timing.heartbeat_timeout)
    parser.add_argument("--settle", type=float, default=Timing.settle)
    parser.add_argument("--start-timeout", type=float, default=Timing.start_timeout)
    parser.add_argument(
        "--secret-file",
        default=os.environ.get(SECRET_FILE_ENV) or None,
        help=f"the job's secret (default: ${SECRET_FILE_ENV}); clients without it are "
        "refused before they reach the store. Without it the store is open to anyone "
        "who can reach the port.",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.min_nodes <= args.max_nodes:
        parser.error(f"need 1 <= --min-nodes ({args.min_nodes}) <= --max-nodes ({args.max_nodes})")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    timing = Timing(
        heartbeat_timeout=args.heartbeat_timeout,
        settle=args.settle,
        start_timeout=args.start_timeout,
    )
    try:
        secret = read_secret(args.secret_file) if args.secret_file else None
    except AuthError as exc:
        log.error("%s", exc)
        return EXIT_PERMANENT
    if secret is None:
        log.warning("no --secret-file: the store accepts any client that reaches the port")
    return serve(args.host, args.port, args.min_nodes, args.max_nodes, timing, secret)


if __name__ == "__main__":
    sys.exit(main())
