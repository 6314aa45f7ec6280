"""Warm spares on the worker's side: standing by outside every round, the promotion
order over HTTP (authenticated with the job's secret), and the rendezvous taking a
promoted spare in as a pod that joined."""

from __future__ import annotations

import dataclasses
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest

from lmworker.metrics import TrainMetrics, promotion_request, serve
from lmworker.rendezvous import Coordinator, Timing
from lmworker.rounds import Member, MembershipView, decide_round
from tests.unit.worker.test_rounds import view as rounds_view
from tests.waiting import wait_for

SECRET = b"s" * 32


def view(live: tuple[Member, ...], **kw: object) -> MembershipView:
    return rounds_view(live=live, **kw)


def decide(v: MembershipView):  # type: ignore[no-untyped-def]
    return decide_round(v, 1, 4, settle=0.25, form_timeout=15, start_timeout=30)


def test_a_spare_never_trains_and_does_not_count_towards_the_start() -> None:
    spare = Member(slot=3, index=-1, pod="job-spare-0", spare=True)
    workers = (Member(1, 0, "w0", expected=2), Member(2, 1, "w1", expected=2))
    assert decide(view((workers[0], spare))) is None  # still waiting for worker 1
    started = decide(view((*workers, spare)))
    assert started is not None
    assert started.members == (1, 2)
    current = {"current_round": 1, "current_members": (1, 2)}
    assert decide(view((*workers, spare), **current)) is None
    # Promoted: the same slot, now a worker with an index, joins like a new pod.
    joined = dataclasses.replace(spare, spare=False, index=2, expected=3)
    grown = decide(view((*workers, joined), **current))
    assert grown is not None
    assert grown.members == (1, 2, 3)
    assert "1 worker(s) joined" in grown.reason


@pytest.mark.parametrize(
    ("secret", "authorization", "body", "code"),
    [
        (SECRET, f"Bearer {SECRET.decode()}", b'{"index": 2, "expected": 3}', 200),
        (SECRET, f"bearer {SECRET.decode()}", b'{"index": 2}', 200),
        (SECRET, None, b'{"index": 2}', 401),
        (SECRET, "Bearer wrong", b'{"index": 2}', 401),
        (SECRET, f"Basic {SECRET.decode()}", b'{"index": 2}', 401),
        (None, "Bearer anything", b'{"index": 2}', 403),
        (SECRET, f"Bearer {SECRET.decode()}", b"not json", 400),
        (SECRET, f"Bearer {SECRET.decode()}", b'{"index": -1}', 400),
        (SECRET, f"Bearer {SECRET.decode()}", b'{"index": true}', 400),
        (SECRET, f"Bearer {SECRET.decode()}", b"[2]", 400),
    ],
)
def test_promotion_requests_are_checked(
    secret: bytes | None, authorization: str | None, body: bytes, code: int
) -> None:
    got, message, order = promotion_request(secret, authorization, body)
    assert got == code, message
    assert (order is not None) == (code == 200)


@pytest.fixture
def spare_server() -> Iterator[tuple[TrainMetrics, int]]:
    metrics = TrainMetrics()
    srv = serve(metrics, "127.0.0.1", 0, SECRET)
    yield metrics, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def post(port: int, token: bytes, body: dict[str, int]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/promote",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token.decode()}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_promote_endpoint_takes_the_operators_order_once(
    spare_server: tuple[TrainMetrics, int],
) -> None:
    metrics, port = spare_server
    assert get(port, "/ready") == 503
    assert post(port, SECRET, {"index": 2})[0] == 409  # not a spare
    orders: list[tuple[int, int]] = []

    def promote(index: int, expected: int) -> bool:
        if orders and orders[0][0] != index:
            return False
        orders.append((index, expected))
        return True

    metrics.on_promote = promote
    metrics.standby.set()
    assert get(port, "/ready") == 200  # a spare standing by is ready
    assert post(port, b"x" * 32, {"index": 2})[0] == 401
    assert orders == []
    assert post(port, SECRET, {"index": 2, "expected": 3}) == (200, "ok\n")
    assert post(port, SECRET, {"index": 2, "expected": 3})[0] == 200  # repeated: fine
    assert post(port, SECRET, {"index": 5})[0] == 409
    assert orders == [(2, 3), (2, 3)]


def test_the_rendezvous_takes_a_promoted_spare_in_at_its_next_round() -> None:
    """Real store, real heartbeat threads: two workers train, a spare stands by, the
    operator's order reaches the rendezvous through the spare's own heartbeat thread."""
    from torch.distributed import TCPStore

    from lmworker.elastic import Membership

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = TCPStore(
        "127.0.0.1",
        port,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=10),
        use_libuv=True,
        master_listen_fd=listener.detach(),
    )
    coordinator = Coordinator(server, 1, 4, Timing(settle=0.05))
    members = [
        Membership("127.0.0.1", port, index=i, pod=f"job-worker-{i}", expected=2) for i in range(2)
    ]
    spare = Membership("127.0.0.1", port, index=-1, pod="job-spare-0", expected=0, spare=True)
    try:

        def round_of(size: int) -> int | None:
            coordinator.tick()
            return coordinator.round if len(coordinator.members) == size else None

        first = wait_for(lambda: round_of(2), timeout=10, what="a round of the two workers")
        assert spare.slot not in coordinator.members
        server.add(f"formed/{first}", 2)  # as the two workers do once their group formed
        assert spare.promote(2, 3)
        assert not spare.promote(4, 3)  # promoted already, to 2
        assert spare.promote(2, 3)  # the operator repeating its order
        later = wait_for(lambda: round_of(3), timeout=10, what="a round with the spare")
        assert later == first + 1  # one round: a join
        assert coordinator.members[-1] == spare.slot
        body = json.loads(server.get(f"round/{later}"))
        assert body["indexes"] == [0, 1, 2]
        assert spare.info["spare"] is False
        assert spare.info["index"] == 2
    finally:
        for m in (*members, spare):
            m.close()
