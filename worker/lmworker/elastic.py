"""A worker's side of the rendezvous (see `lmworker.rendezvous` for the store layout).

A background thread heartbeats, answers check-ins, writes the leave request and keeps
`latest` (the newest round id) fresh, so the training loop only reads an attribute
between steps. Losing the store (its pod restarted) does not stop training: the
process group needs the store only to form, so the thread reconnects and registers
again with the new store, and the group re-forms at the next step boundary.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lmworker.storeauth import AuthError, ForwarderProcess, check_access, read_secret

if TYPE_CHECKING:
    from torch.distributed import Store

log = logging.getLogger("lmworker.elastic")

HEARTBEAT_INTERVAL = 0.25
POLL = 0.02
STANDBY_POLL = 0.1


@dataclass(frozen=True)
class Round:
    epoch: str
    number: int
    members: tuple[int, ...]
    indexes: tuple[int, ...]
    stop: bool
    reason: str
    rank: int  # -1 when this worker is not a member

    @property
    def world_size(self) -> int:
        return len(self.members)


class StoreLostError(RuntimeError):
    """The rendezvous store is unreachable; it will be retried."""


def connect(
    host: str, port: int, timeout: float, forwarder: ForwarderProcess | None = None
) -> Store:
    """A store client, once the server accepts connections.

    TCPStore's own connect retries hold the GIL for seconds while the server is down,
    which would stall training in the other threads, so reachability is probed first
    with a plain socket. With a `forwarder` (the job has a secret), the probe is a full
    handshake with the authenticating proxy (AuthError when it refuses the secret) and
    the client connects to the forwarder's local address.
    """
    from torch.distributed import TCPStore

    try:
        if forwarder is None:
            socket.create_connection((host, port), timeout=min(timeout, 1.0)).close()
        else:
            check_access(host, port, forwarder.secret, timeout=min(timeout, 1.0))
            host, port = forwarder.address
    except OSError as exc:
        raise StoreLostError(f"rendezvous store {host}:{port} unreachable: {exc}") from exc
    return TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout), use_libuv=True)


class Membership:
    """Registration, heartbeat and round discovery for one worker process."""

    def __init__(
        self,
        host: str,
        port: int,
        index: int,
        pod: str,
        expected: int,
        connect_timeout: float = 300.0,
        secret_file: str | None = None,
        local_rank: int = 0,
        local_size: int = 1,
        group: str = "",
        spare: bool = False,
    ) -> None:
        self.host, self.port = host, port
        # Every store client of this process goes through it (gloo's included: its
        # stores are PrefixStores on self.store).
        self.forwarder = (
            ForwarderProcess((host, port), read_secret(secret_file), secret_file)
            if secret_file
            else None
        )
        self.info: dict[str, Any] = {
            "index": index,
            "pod": pod,
            "expected": expected,
            "pid": os.getpid(),
            # A pod's processes share `group`; the rendezvous takes them in as one.
            "local_rank": local_rank,
            "local_size": local_size,
            "group": group,
            # A warm spare stands by outside every round until promoted (see promote).
            "spare": spare,
        }
        self.connect_timeout = connect_timeout
        self.leaving = threading.Event()
        # Set once the operator promoted this spare: (index, expected); the heartbeat
        # thread writes it to the store.
        self._promotion: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.store = self._connect_retrying()
        self.epoch = ""
        self.slot = 0
        self.latest = 0  # newest round id the heartbeat thread has seen
        self.latest_epoch = ""
        self._register()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="rdzv-heartbeat", daemon=True)
        self._thread.start()

    # -- connection ----------------------------------------------------------------

    def _connect_retrying(self) -> Store:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                store = connect(self.host, self.port, timeout=10.0, forwarder=self.forwarder)
                store.get("epoch")  # the rendezvous writes it first thing
                return store
            except AuthError:
                raise  # retrying cannot make a wrong secret right
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise StoreLostError(
                        f"rendezvous store {self.host}:{self.port} unreachable for "
                        f"{self.connect_timeout:g}s: {exc}"
                    ) from exc
                time.sleep(0.5)

    def _register(self) -> None:
        with self._lock:
            self.epoch = self.store.get("epoch").decode()
            slot = int(self.store.add("members/seq", 1))
            self.store.set(f"member/{slot}", json.dumps(self.info))
            self.slot = slot
            self.latest = int(self.store.add("round", 0))
            self.latest_epoch = self.epoch
        log.info("registered as slot %d (store epoch %s)", slot, self.epoch[:8])

    @property
    def spare(self) -> bool:
        return bool(self.info["spare"])

    def promote(self, index: int, expected: int) -> bool:
        """Turn this standby spare into the worker of `index`; False if it was one already.

        The caller is the HTTP thread: it writes `promote/<pod>` at once, and the
        heartbeat thread writes it again (after a store restart too); the rendezvous takes
        the pod in at its next round as a worker that joined. A re-registration after a
        store restart registers as that worker.
        """
        with self._lock:
            if self._promotion is not None:
                return self._promotion[0] == index  # the operator repeats its order
            self._promotion = (index, expected)
            self.info = {**self.info, "spare": False, "index": index, "expected": expected}
        log.info("promoted from spare to worker index %d", index)
        try:
            # At once, from this thread (TCPStore clients serialise their operations);
            # the heartbeat thread writes it too, which covers a store that is away now.
            body = json.dumps({"index": index, "expected": expected})
            self.store.set(f"promote/{self.info['pod']}", body)
        except Exception as exc:
            log.warning("could not write the promotion now (%s); the heartbeat will", exc)
        return True

    def reconnect(self) -> None:
        """After the store went away: connect again and register anew."""
        self.store = self._connect_retrying()
        self._register()

    # -- heartbeat thread ----------------------------------------------------------

    def _heartbeat(self) -> None:
        store: Store | None = None
        answered = 0
        leave_sent_for = 0
        promoted_for = 0
        last_beat = 0.0
        while not self._stop.is_set():
            try:
                if store is None:
                    store = connect(self.host, self.port, timeout=5.0, forwarder=self.forwarder)
                epoch = store.get("epoch").decode()
                if epoch != self.latest_epoch:
                    # The store restarted; the main loop notices and re-registers.
                    self.latest_epoch = epoch
                    answered = 0
                if epoch == self.epoch:
                    now = time.monotonic()
                    if now - last_beat >= HEARTBEAT_INTERVAL:
                        store.add(f"hb/{self.slot}", 1)
                        last_beat = now
                    if store.check(["checkin"]):
                        n = int(store.get("checkin"))
                        if n > answered:
                            store.set(f"ack/{n}/{self.slot}", "1")
                            answered = n
                    promotion = self._promotion
                    if promotion is not None and promoted_for != self.slot:
                        index, expected = promotion
                        body = json.dumps({"index": index, "expected": expected})
                        store.set(f"promote/{self.info['pod']}", body)
                        promoted_for = self.slot
                    if self.leaving.is_set() and leave_sent_for != self.slot:
                        store.set(f"leave/{self.slot}", "1")
                        leave_sent_for = self.slot
                    self.latest = int(store.add("round", 0))
            except Exception:
                store = None
                time.sleep(0.5)
                continue
            time.sleep(POLL * 2)

    def close(self) -> None:
        # The forwarder lives until the process exits (its stdin pipe closes then):
        # tearing down a process group may still talk to the store.
        self._stop.set()

    # -- rounds --------------------------------------------------------------------

    def changed_since(self, current: Round | None) -> bool:
        """A newer round exists (or the store restarted) since `current`."""
        if current is None:
            return True
        return self.latest_epoch != current.epoch or self.latest > current.number

    def _read_round(self, number: int) -> Round:
        body: dict[str, Any] = json.loads(self.store.get(f"round/{number}"))
        members = tuple(int(s) for s in body["members"])
        rank = members.index(self.slot) if self.slot in members else -1
        return Round(
            epoch=self.epoch,
            number=number,
            members=members,
            indexes=tuple(int(i) for i in body["indexes"]),
            stop=bool(body.get("stop")),
            reason=str(body.get("reason", "")),
            rank=rank,
        )

    def peek_latest(self) -> Round | None:
        """The newest published round, whoever it includes."""
        newest = int(self.store.add("round", 0))
        return self._read_round(newest) if newest > 0 else None

    def done_info(self) -> dict[str, Any] | None:
        if self.store.check(["done"]):
            info: dict[str, Any] = json.loads(self.store.get("done"))
            return info
        return None

    def next_round(self, after: Round | None, give_up: threading.Event) -> Round | None:
        """Wait for the newest round that includes this worker.

        Returns None when `give_up` is set or training is done.
        """
        seen = after.number if after is not None and after.epoch == self.epoch else 0
        while not give_up.is_set():
            try:
                if self.store.get("epoch").decode() != self.epoch:
                    raise StoreLostError("the rendezvous store restarted")
                newest = int(self.store.add("round", 0))
                if newest > seen:
                    rnd = self._read_round(newest)
                    # A round without us (a stop round included) is for others; a
                    # worker that is leaving anyway takes it as its cue to go.
                    if rnd.rank >= 0 or self.leaving.is_set():
                        return rnd
                    seen = newest
                if self.store.check([f"dead/{self.slot}"]):
                    log.info("the rendezvous gave slot %d up; registering again", self.slot)
                    self._register()
                    seen = 0
                if self.done_info() is not None:
                    return None
            except Exception as exc:
                log.warning("rendezvous store: %s; reconnecting", exc)
                self.reconnect()
                seen = 0
            # A spare standing by is in no round, so it waits longer between looks: its
            # polls go through two relays each and would take CPU from the workers.
            time.sleep(STANDBY_POLL if self.spare else POLL)
        return None

    def prefix(self, rnd: Round) -> str:
        return f"{rnd.epoch}/pg/{rnd.number}"

    def gather_at(self, rnd: Round, give_up: threading.Event) -> bool:
        """Every member arrived for this round's group; False if it was superseded."""
        from torch.distributed import PrefixStore

        pre = PrefixStore(self.prefix(rnd), self.store)
        pre.set(f"arrived/{rnd.rank}", "1")
        keys = [f"arrived/{r}" for r in range(rnd.world_size)]
        while not give_up.is_set():
            if pre.check(keys):
                return True
            if self.changed_since(rnd) or int(self.store.add(f"failed/{rnd.number}", 0)) > 0:
                return False
            time.sleep(POLL / 4)
        return False

    def group_store(self, rnd: Round) -> Store:
        from torch.distributed import PrefixStore

        return PrefixStore(self.prefix(rnd) + "/group", self.store)

    def formed(self, rnd: Round) -> None:
        self.store.add(f"formed/{rnd.number}", 1)

    def report_failure(self, rnd: Round) -> None:
        try:
            self.store.add(f"failed/{rnd.number}", 1)
        except Exception:
            log.warning("could not report the failure of round %d", rnd.number)

    def mark_done(self, info: dict[str, Any]) -> None:
        self.store.set("done", json.dumps(info))
