"""The devcluster userspace service proxy against a fake API and plain TCP backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from devcluster.proxy import PortKey, ServiceProxy, endpoint_backends, service_ports
from tests.unit.devcluster.kubelet_fakeapi import FakeAPI
from tests.waiting import wait_for_async

JSON = dict[str, Any]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def test_service_ports_and_endpoint_backends() -> None:
    svc = {
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {
            "clusterIP": "127.12.0.9",
            "ports": [
                {"name": "http", "port": 80},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        },
    }
    assert service_ports(svc) == [("127.12.0.9", 80, PortKey("n", "s", "http"))]
    assert service_ports({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}) == []
    assert service_ports({"spec": {"type": "ExternalName", "clusterIP": "127.1.1.1"}}) == []
    ep = {
        "subsets": [
            {
                "addresses": [{"ip": "127.10.0.2"}, {"ip": "127.10.0.3"}],
                "notReadyAddresses": [{"ip": "127.10.0.4"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            }
        ]
    }
    assert endpoint_backends(ep, "http") == [("127.10.0.2", 8080), ("127.10.0.3", 8080)]
    assert endpoint_backends(ep, "metrics") == [("127.10.0.2", 9090), ("127.10.0.3", 9090)]
    assert endpoint_backends(ep, "other") == []
    single = {"subsets": [{"addresses": [{"ip": "127.10.0.5"}], "ports": [{"port": 1234}]}]}
    assert endpoint_backends(single, "") == [("127.10.0.5", 1234)]
    assert endpoint_backends(None, "") == []


class Backends:
    """TCP servers on pod-like loopback addresses."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []

    async def start(self, ip: str, handler: Handler) -> int:
        server = await asyncio.start_server(handler, ip, 0)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 1)


def named(name: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(name.encode())
        await writer.drain()
        writer.close()

    return handle


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


async def ask(ip: str, port: int, payload: bytes = b"hi") -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


class Env:
    def __init__(self, api: FakeAPI, proxy: ServiceProxy, backends: Backends) -> None:
        self.api = api
        self.proxy = proxy
        self.backends = backends

    def service(self, name: str, ports: list[JSON]) -> str:
        self.api.create("services", {"metadata": {"name": name}, "spec": {"ports": ports}})
        return str(self.api.get("services", name)["spec"]["clusterIP"])  # type: ignore[index]

    def endpoints(self, name: str, addresses: list[str], ports: list[JSON]) -> None:
        obj = {
            "metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip} for ip in addresses], "ports": ports}]
            if addresses
            else [],
        }
        existing = self.api.get("endpoints", name)
        if existing is None:
            self.api.create("endpoints", obj)
        else:
            existing["subsets"] = obj["subsets"]
            self.api.put("endpoints", existing)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    api = FakeAPI()
    url = await api.start()
    proxy = ServiceProxy(url, connect_timeout=1.0)
    await proxy.start()
    await proxy.wait_synced(5)
    backends = Backends()
    try:
        yield Env(api, proxy, backends)
    finally:
        await proxy.stop()
        await backends.close()
        await api.stop()


async def test_round_robin_and_refusal_without_endpoints(env: Env) -> None:
    ip = env.service("web", [{"name": "http", "port": 8080}])
    await wait_for_async(lambda: (ip, 8080) in env.proxy.listeners())
    # No endpoints yet: accepted, then closed at once.
    assert await ask(ip, 8080) == b""
    pa = await env.backends.start("127.10.1.1", named("a"))
    pb = await env.backends.start("127.10.1.2", named("b"))
    env.api.create(
        "endpoints",
        {
            "metadata": {"name": "web"},
            "subsets": [
                {"addresses": [{"ip": "127.10.1.1"}], "ports": [{"name": "http", "port": pa}]},
                {"addresses": [{"ip": "127.10.1.2"}], "ports": [{"name": "http", "port": pb}]},
            ],
        },
    )
    await wait_for_async(lambda: len(env.proxy.backends(PortKey("default", "web", "http"))) == 2)
    answers = [await ask(ip, 8080) for _ in range(6)]
    assert sorted(answers) == [b"a"] * 3 + [b"b"] * 3
    assert answers[0] != answers[1]


async def test_dead_endpoint_is_skipped(env: Env) -> None:
    ip = env.service("svc", [{"port": 9000}])
    port = await env.backends.start("127.10.2.1", named("alive"))
    env.api.create(
        "endpoints",
        {
            "metadata": {"name": "svc"},
            "subsets": [
                # Nothing listens on 127.10.2.2.
                {
                    "addresses": [{"ip": "127.10.2.2"}, {"ip": "127.10.2.1"}],
                    "ports": [{"port": port}],
                }
            ],
        },
    )
    await wait_for_async(lambda: env.proxy.backends(PortKey("default", "svc", "")))
    await wait_for_async(lambda: (ip, 9000) in env.proxy.listeners())
    for _ in range(4):
        assert await ask(ip, 9000) == b"alive"


async def test_listener_follows_service_changes_and_deletion(env: Env) -> None:
    ip = env.service("moving", [{"port": 7000}])
    await wait_for_async(lambda: (ip, 7000) in env.proxy.listeners())
    svc = env.api.get("services", "moving")
    assert svc is not None
    svc["spec"]["ports"] = [{"port": 7001}]
    env.api.put("services", svc)
    await wait_for_async(lambda: (ip, 7001) in env.proxy.listeners())
    await wait_for_async(lambda: (ip, 7000) not in env.proxy.listeners())
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(ip, 7000)
    env.api.remove("services", "moving")
    await wait_for_async(lambda: not env.proxy.listeners())
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(ip, 7001)


async def test_large_transfer_with_half_close(env: Env) -> None:
    ip = env.service("echo", [{"port": 7100}])
    port = await env.backends.start("127.10.3.1", echo)
    env.endpoints("echo", ["127.10.3.1"], [{"port": port}])
    await wait_for_async(lambda: env.proxy.backends(PortKey("default", "echo", "")))
    await wait_for_async(lambda: (ip, 7100) in env.proxy.listeners())
    payload = bytes(range(256)) * 8192  # 2 MiB
    reader, writer = await asyncio.open_connection(ip, 7100)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = await asyncio.wait_for(reader.read(), 10)  # until the backend closes
    await sender
    writer.close()
    assert got == payload


async def test_early_closes_do_not_break_the_proxy(env: Env) -> None:
    ip = env.service("flaky", [{"port": 7200}])
    slam_port = await env.backends.start("127.10.4.1", slam)
    env.endpoints("flaky", ["127.10.4.1"], [{"port": slam_port}])
    await wait_for_async(lambda: env.proxy.backends(PortKey("default", "flaky", "")))
    await wait_for_async(lambda: (ip, 7200) in env.proxy.listeners())
    # The backend resets every connection.
    for _ in range(3):
        assert await ask(ip, 7200) == b""
    # Clients that vanish at once, before or after sending.
    for payload in (b"", b"x" * 100_000):
        _, writer = await asyncio.open_connection(ip, 7200)
        if payload:
            writer.write(payload)
        writer.transport.abort()
    # A healthy backend now: the proxy still works.
    good = await env.backends.start("127.10.4.2", named("ok"))
    env.endpoints("flaky", ["127.10.4.2"], [{"port": good}])
    await wait_for_async(
        lambda: env.proxy.backends(PortKey("default", "flaky", "")) == [("127.10.4.2", good)]
    )
    assert await ask(ip, 7200) == b"ok"
    await wait_for_async(
        lambda: not env.proxy._connections, what="every forwarded connection to finish"
    )
