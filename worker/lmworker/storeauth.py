"""A per-job secret in front of the rendezvous store.

torch's TCPStore has no authentication: whoever reaches its port can read and write
every key (join a round, fake a heartbeat, overwrite `round/<r>`). Its wire protocol is
private to torch and changes between releases, so instead of wrapping it, the check
sits in front of it and the store's bytes pass through untouched:

    worker process                                   rendezvous pod
    TCPStore client ─► Forwarder (127.0.0.1:ephemeral) ═══► AuthProxy (POD_IP:29400)
    (elastic.py, gloo's                                    └─► TCPStore server
     PrefixStores, clones)                                     (127.0.0.1:ephemeral)

Every TCP connection to the proxy must first prove it knows the job's secret:

    proxy  → client   MAGIC (8 bytes) + nonce (32 random bytes)
    client → proxy    HMAC-SHA256(secret, MAGIC + nonce)             (32 bytes)
    proxy  → client   ACCEPTED (1 byte), then the store's own protocol; or
                      REFUSED and the connection is closed

Nothing reaches the store before the proof checks out, so a client without the secret
cannot read or write a single key. The nonce is fresh per connection (a recorded
handshake cannot be replayed) and the secret itself never crosses the network. What
this does not do: encrypt the store's traffic after the handshake (the NetworkPolicy
keeps other pods off the path) or prove the proxy to the client.

The forwarder is what every store client of a worker connects to: the elastic
membership's TCPStore, gloo's use of it inside `init_process_group` (a PrefixStore on
the same client) and any clone torch makes of it (a new connection to the same local
address), so all of them are covered without knowing what they send.

Stdlib only (no torch): the relays are plain threads whose socket calls release the GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("lmworker.storeauth")

MAGIC = b"ELMRDZV1"
NONCE_BYTES = 32
PROOF_BYTES = 32
ACCEPTED = b"\x01"
REFUSED = b"\x00"
# A client gets this long to answer the challenge; a silent one cannot hold a thread.
HANDSHAKE_TIMEOUT = 5.0
# Handshakes in progress at once; more connections are closed at once (a flood of
# silent clients cannot pile up threads).
MAX_PENDING_HANDSHAKES = 128
MIN_SECRET_BYTES = 16
RELAY_BUFFER = 64 * 1024


class AuthError(RuntimeError):
    """The proxy refused the secret, or the secret itself is unusable."""


def read_secret(path: str) -> bytes:
    """The job's secret from its mounted file (surrounding whitespace dropped)."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise AuthError(
            f"cannot read the rendezvous secret {path}: {exc.strerror or exc}; the operator "
            "mounts the job's Secret <job>-rdzv-auth there"
        ) from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise AuthError(
            f"the rendezvous secret in {path} has {len(secret)} bytes, fewer than "
            f"{MIN_SECRET_BYTES}; delete the job's Secret so the operator makes a new one"
        )
    return secret


def new_secret() -> str:
    """A fresh random token (256 bits, URL-safe text) for a job's Secret."""
    return secrets.token_urlsafe(32)


def proof(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, MAGIC + nonce, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _nodelay(sock: socket.socket) -> None:
    # Store requests are tiny and answered one at a time: Nagle would add 40 ms each.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client_handshake(sock: socket.socket, secret: bytes) -> None:
    """Answer the proxy's challenge on a connected socket; raises AuthError if refused."""
    challenge = _recv_exact(sock, len(MAGIC) + NONCE_BYTES)
    if not challenge.startswith(MAGIC):
        raise AuthError(
            "the rendezvous address does not answer with the authenticating proxy's "
            "greeting (an older rendezvous pod, or not a rendezvous at all)"
        )
    sock.sendall(proof(secret, challenge[len(MAGIC) :]))
    try:
        answer = _recv_exact(sock, 1)
    except ConnectionError:
        answer = REFUSED
    if answer != ACCEPTED:
        raise AuthError(
            "the rendezvous refused this pod's secret: it does not hold the job's "
            "Secret <job>-rdzv-auth (recreated since the rendezvous pod started?)"
        )


def authenticated_connection(host: str, port: int, secret: bytes, timeout: float) -> socket.socket:
    """A socket to the proxy past the handshake, ready for the store's protocol."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        _nodelay(sock)
        client_handshake(sock, secret)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def check_access(host: str, port: int, secret: bytes, timeout: float) -> None:
    """Raises OSError when the proxy is unreachable, AuthError when it refuses."""
    authenticated_connection(host, port, secret, timeout).close()


# --------------------------------------------------------------------------------------
# Byte relays


def _pump(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(RELAY_BUFFER)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        # Pass the end on; the other direction closes both once it ends too.
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def relay(a: socket.socket, b: socket.socket, name: str) -> None:
    """Copy bytes both ways until both sides are done, then close both (returns at once)."""

    def run() -> None:
        back = threading.Thread(target=_pump, args=(b, a), name=f"{name}-back", daemon=True)
        back.start()
        _pump(a, b)
        back.join()
        a.close()
        b.close()

    threading.Thread(target=run, name=name, daemon=True).start()


def _listener(host: str, port: int) -> socket.socket:
    return socket.create_server((host, port), backlog=1024)


class AuthProxy:
    """Listens on the pod's address; relays authenticated connections to the store."""

    def __init__(self, listener: socket.socket, backend: tuple[str, int], secret: bytes) -> None:
        self.listener = listener
        self.backend = backend
        self.secret = secret
        self.accepted = 0
        self.refused = 0
        self._pending = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)
        self._thread = threading.Thread(target=self._accept, name="rdzv-auth", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> AuthProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            if not self._pending.acquire(blocking=False):
                log.warning("Dropped a rendezvous connection: too many handshakes at once")
                conn.close()
                continue
            threading.Thread(
                target=self._admit, args=(conn, peer), name="rdzv-auth-admit", daemon=True
            ).start()

    def _admit(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            self._handshake(conn, peer)
        finally:
            self._pending.release()

    def _handshake(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        nonce = os.urandom(NONCE_BYTES)
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            _nodelay(conn)
            conn.sendall(MAGIC + nonce)
            answer = _recv_exact(conn, PROOF_BYTES)
        except (OSError, ConnectionError) as exc:
            # Readiness probes connect and hang up; that is no attack worth a log line.
            log.debug("connection from %s:%s closed during the handshake: %s", *peer[:2], exc)
            conn.close()
            return
        if not hmac.compare_digest(answer, proof(self.secret, nonce)):
            self.refused += 1
            log.warning(
                "Refused a rendezvous connection without the job's secret peer=%s:%s", *peer[:2]
            )
            with contextlib.suppress(OSError):
                conn.sendall(REFUSED)
            conn.close()
            return
        try:
            store = socket.create_connection(self.backend, timeout=HANDSHAKE_TIMEOUT)
        except OSError as exc:
            log.warning("could not reach the store behind the proxy: %s", exc)
            conn.close()
            return
        try:
            _nodelay(store)
            store.settimeout(None)
            conn.settimeout(None)
            conn.sendall(ACCEPTED)
        except OSError:
            store.close()
            conn.close()
            return
        self.accepted += 1
        relay(conn, store, "rdzv-auth-relay")

    def close(self) -> None:
        self.listener.close()


class Forwarder:
    """A local address for a worker's store clients; each connection is authenticated
    with the proxy and then relayed."""

    def __init__(self, upstream: tuple[str, int], secret: bytes, bind: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.secret = secret
        self.listener = _listener(bind, 0)
        self.refused: AuthError | None = None
        self._thread = threading.Thread(target=self._accept, name="rdzv-forward", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._forward, args=(conn,), name="rdzv-forward-conn", daemon=True
            ).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = authenticated_connection(*self.upstream, self.secret, HANDSHAKE_TIMEOUT)
        except AuthError as exc:
            self.refused = exc
            log.error("%s", exc)
            conn.close()
            return
        except OSError as exc:
            log.debug("rendezvous %s:%s unreachable: %s", *self.upstream, exc)
            conn.close()
            return
        _nodelay(conn)
        relay(conn, upstream, "rdzv-forward-relay")

    def close(self) -> None:
        self.listener.close()


class ForwarderProcess:
    """A Forwarder in a child process (`python -m lmworker.storeauth --forward`).

    In the training process the relay threads would wait for the GIL whenever the
    training loop holds it, adding up to a switch interval (5 ms) to each store
    operation and taking the GIL from the loop in turn; a child process of its own
    (stdlib only, ~20 MB) relays without either. It exits when the worker does: it
    watches its stdin, a pipe only the worker holds, and ignores SIGTERM (the worker
    needs the store to leave). The secret goes by file path, never on the command line.
    """

    def __init__(self, upstream: tuple[str, int], secret: bytes, secret_file: str) -> None:
        self.upstream = upstream
        self.secret = secret
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lmworker.storeauth",
                f"{upstream[0]}:{upstream[1]}",
                "--secret-file",
                secret_file,
                "--forward",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            port = int(line.split(b" ")[-1])
        except ValueError:
            self.proc.kill()
            raise AuthError(
                f"the rendezvous forwarder did not start (it said {line!r}); see the log above"
            ) from None
        self.address = ("127.0.0.1", port)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def _forward_until_stdin_closes(upstream: tuple[str, int], secret: bytes) -> int:
    # A worker on SIGTERM still needs the store to leave cleanly, and a runtime may
    # signal the whole process group (devcluster's kubelet does): only the worker's exit
    # (the end of stdin) ends the forwarder.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forwarder = Forwarder(upstream, secret)
    print(f"forwarding {forwarder.address[0]} {forwarder.address[1]}", flush=True)
    while sys.stdin.buffer.read(4096):
        pass
    return 0


# --------------------------------------------------------------------------------------
# `python -m lmworker.storeauth HOST:PORT --secret-file F`: can this pod reach the store?


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmworker.storeauth",
        description="Check access to a job's rendezvous store with a secret file.",
    )
    parser.add_argument("address", help="HOST:PORT of the rendezvous Service")
    parser.add_argument("--secret-file", help="the job's mounted secret (none: try without)")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument(
        "--forward",
        action="store_true",
        help="serve a local forwarder until stdin closes (what a worker starts)",
    )
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    try:
        secret = read_secret(args.secret_file) if args.secret_file else b""
    except AuthError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    if args.forward:
        return _forward_until_stdin_closes((host, int(port)), secret)
    started = time.monotonic()
    try:
        check_access(host, int(port), secret, args.timeout)
    except AuthError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unreachable: {exc}", file=sys.stderr)
        return 2
    print(f"accepted in {1000 * (time.monotonic() - started):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
