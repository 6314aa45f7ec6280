"""The authenticating proxy in front of the rendezvous store, with a real TCPStore."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from torch.distributed import DistError, PrefixStore, TCPStore

from lmworker import storeauth
from tests.waiting import wait_for

SECRET = b"s3cret-token-of-the-job-0123456789"


class Stack:
    """A TCPStore server on loopback behind an AuthProxy, as the rendezvous pod runs it."""

    def __init__(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        self.server = TCPStore(
            "127.0.0.1",
            port,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=5),
            use_libuv=True,
            master_listen_fd=listener.detach(),
        )
        self.proxy = storeauth.AuthProxy(
            socket.create_server(("127.0.0.1", 0)), ("127.0.0.1", port), SECRET
        ).start()
        self.server.set("epoch", "e1")

    def client(self, secret: bytes) -> TCPStore:
        forwarder = storeauth.Forwarder(self.proxy.address, secret)
        host, port = forwarder.address
        return TCPStore(host, port, is_master=False, timeout=timedelta(seconds=3), use_libuv=True)


def closed(sock: socket.socket) -> bool:
    """The peer closed (a reset, when our unread bytes were still in its buffer)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.proxy.close()


def test_a_client_with_the_secret_uses_every_store_operation(stack: Stack) -> None:
    store = stack.client(SECRET)
    assert store.get("epoch") == b"e1"
    store.set("member/1", "{}")
    assert store.add("members/seq", 1) == 1
    assert store.check(["member/1"])
    assert store.compare_set("round", "", "1") == b"1"
    store.wait(["member/1"], timedelta(seconds=1))
    assert store.delete_key("member/1")
    # gloo uses the store through PrefixStores on the same client, and torch may clone it
    # (a new connection to the forwarder): both go through the proxy too.
    PrefixStore("pg/1", store).set("arrived/0", "1")
    assert stack.server.get("pg/1/arrived/0") == b"1"
    assert store.clone().get("epoch") == b"e1"  # type: ignore[attr-defined]  # not in the stubs
    assert stack.proxy.accepted >= 2
    assert stack.proxy.refused == 0


@pytest.mark.parametrize("secret", [b"", b"another-job-secret-0123456789"])
def test_a_client_without_the_secret_is_refused_before_any_key(stack: Stack, secret: bytes) -> None:
    host, port = stack.proxy.address
    with pytest.raises(storeauth.AuthError, match="refused this pod's secret"):
        storeauth.check_access(host, port, secret, timeout=2.0)
    keys = stack.server.num_keys()
    # A plain TCPStore client speaks the store protocol at once: its first bytes are
    # taken as a (wrong) proof, and nothing reaches the store.
    with pytest.raises(DistError):
        TCPStore(host, port, is_master=False, timeout=timedelta(seconds=1), use_libuv=True)
    # Raw bytes after a wrong proof are never forwarded either.
    with socket.create_connection((host, port), timeout=2) as raw:
        raw.recv(64)
        raw.sendall(b"\x00" * storeauth.PROOF_BYTES + b"set member/9 anything" * 50)
        assert raw.recv(1) == storeauth.REFUSED
        assert closed(raw)
    assert stack.server.num_keys() == keys
    assert stack.proxy.refused >= 2
    assert stack.proxy.accepted == 0


def test_a_forwarder_with_a_wrong_secret_reports_the_refusal(stack: Stack) -> None:
    forwarder = storeauth.Forwarder(stack.proxy.address, b"wrong-secret-0123456789")
    host, port = forwarder.address
    with pytest.raises(DistError):
        TCPStore(host, port, is_master=False, timeout=timedelta(seconds=1), use_libuv=True)
    assert isinstance(forwarder.refused, storeauth.AuthError)


def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storeauth, "HANDSHAKE_TIMEOUT", 0.2)
    with socket.create_connection(stack.proxy.address, timeout=3) as raw:
        assert raw.recv(64).startswith(storeauth.MAGIC)
        assert closed(raw)  # by the proxy, nothing answered


def test_read_secret_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(storeauth.AuthError, match="cannot read the rendezvous secret"):
        storeauth.read_secret(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(storeauth.AuthError, match="fewer than 16"):
        storeauth.read_secret(str(short))
    good = tmp_path / "token"
    good.write_text(storeauth.new_secret() + "\n")
    assert len(storeauth.read_secret(str(good))) >= 32


def test_the_forwarder_process_relays_and_ends_with_its_parent(
    stack: Stack, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_bytes(SECRET + b"\n")
    forwarder = storeauth.ForwarderProcess(stack.proxy.address, SECRET, str(token))
    try:
        host, port = forwarder.address
        store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=3), use_libuv=True)
        assert store.get("epoch") == b"e1"
        assert store.add("hb/1", 1) == 1
        # The secret travels by file: it is nowhere on the command line.
        assert SECRET.decode() not in str(forwarder.proc.args)
        # SIGTERM to the process group (as devcluster's kubelet sends it) must leave the
        # forwarder serving: the worker still needs the store to ask to leave.
        forwarder.proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):  # a default handler dies at once
            forwarder.proc.wait(timeout=0.5)
        store.set("leave/1", "1")
        assert store.get("leave/1") == b"1"
    finally:
        forwarder.close()
    assert forwarder.proc.wait(timeout=10) == 0


def test_a_forwarder_process_without_a_readable_secret_says_so(
    stack: Stack, tmp_path: Path
) -> None:
    with pytest.raises(storeauth.AuthError, match="forwarder did not start"):
        storeauth.ForwarderProcess(stack.proxy.address, SECRET, str(tmp_path / "missing"))


def test_silent_clients_cannot_pile_up_handshakes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storeauth, "MAX_PENDING_HANDSHAKES", 1)
    proxy = storeauth.AuthProxy(
        socket.create_server(("127.0.0.1", 0)), stack.proxy.backend, SECRET
    ).start()
    silent = socket.create_connection(proxy.address, timeout=3)
    assert silent.recv(64).startswith(storeauth.MAGIC)  # holds the only slot
    with socket.create_connection(proxy.address, timeout=3) as second:
        assert closed(second)  # dropped without a challenge
    silent.close()  # frees the slot

    def admitted() -> bool:
        try:
            storeauth.check_access(*proxy.address, SECRET, timeout=2.0)
        except (OSError, storeauth.AuthError):
            return False
        return True

    wait_for(admitted, 10, "the proxy to admit again once the silent client left")
    proxy.close()
