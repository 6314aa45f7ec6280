"""A userspace service proxy for devcluster, as kube-proxy's old userspace mode.

`ServiceProxy` watches Services and Endpoints through the Kubernetes REST API (all
namespaces). For every TCP port of every Service with a cluster IP (types ClusterIP,
NodePort and LoadBalancer; headless Services have none) it listens on
`clusterIP:port` and forwards each accepted connection to one ready endpoint of that
port (the Endpoints object of the same name: `subsets[].addresses[]` times the subset
port whose name matches the service port's name), round robin. An endpoint that refuses
the connection is skipped for the next one. With no ready endpoint the connection is
closed at once. Listeners follow the Services: added, moved when the cluster IP or
ports change, and closed when the Service goes away (open connections keep running
until either side closes them, or the proxy stops).

Cluster IPs must be loopback addresses (the API server hands them out from a 127/8
range) so that this process can bind them. UDP and SCTP ports are not proxied;
`sessionAffinity` is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from devcluster.informer import Informer, RestClient

JSON = dict[str, Any]

log = logging.getLogger(__name__)

_BUFFER = 64 * 1024


@dataclass(frozen=True)
class PortKey:
    """One port of one Service."""

    namespace: str
    name: str
    port_name: str


def service_ports(svc: JSON) -> list[tuple[str, int, PortKey]]:
    """(cluster IP, port, key) for each TCP port the proxy must listen on."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    if not ip or ip == "None":
        return []
    if spec.get("type", "ClusterIP") not in ("ClusterIP", "NodePort", "LoadBalancer"):
        return []
    out: list[tuple[str, int, PortKey]] = []
    for p in spec.get("ports") or []:
        if str(p.get("protocol") or "TCP") != "TCP" or not isinstance(p.get("port"), int):
            continue
        key = PortKey(
            str(meta.get("namespace", "")), str(meta.get("name", "")), str(p.get("name") or "")
        )
        out.append((str(ip), int(p["port"]), key))
    return out


def endpoint_backends(endpoints: JSON | None, port_name: str) -> list[tuple[str, int]]:
    """The ready (ip, port) pairs of an Endpoints object for the service port `port_name`."""
    if not endpoints:
        return []
    out: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        match = [p for p in ports if str(p.get("name") or "") == port_name]
        if not match and len(ports) == 1 and not port_name:
            match = ports
        for p in match:
            if str(p.get("protocol") or "TCP") != "TCP" or not isinstance(p.get("port"), int):
                continue
            for addr in subset.get("addresses") or []:
                if addr.get("ip"):
                    out.append((str(addr["ip"]), int(p["port"])))
    return out


class _Listener:
    def __init__(self, ip: str, port: int, key: PortKey) -> None:
        self.ip = ip
        self.port = port
        self.key = key
        self.server: asyncio.Server | None = None
        self.failures = 0


class ServiceProxy:
    """Forwards clusterIP:port to ready endpoints (see the module docstring).

    Args:
        api_url: base URL of the API server.
        connect_timeout: seconds to reach one endpoint before trying the next.
        retry_interval: how often listeners that could not bind are retried.
        token: the bearer token to send to the API server, if it needs one.
    """

    def __init__(
        self,
        api_url: str,
        *,
        connect_timeout: float = 5.0,
        retry_interval: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        self._session: aiohttp.ClientSession | None = None
        self._services: Informer | None = None
        self._endpoints: Informer | None = None
        self._endpoints_by_name: dict[tuple[str, str], JSON] = {}
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._rr: dict[PortKey, int] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60),
            headers={"Authorization": f"Bearer {self._token}"} if self._token else None,
        )
        client = RestClient(self.api_url, self._session)
        self._services = Informer(
            client, "/api/v1/services", self._on_service, name="proxy services"
        )
        self._endpoints = Informer(
            client, "/api/v1/endpoints", self._on_endpoints, name="proxy endpoints"
        )
        self._services.start()
        self._endpoints.start()
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="proxy reconcile")

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until Services and Endpoints have been listed and the listeners opened."""
        services, endpoints = self._services, self._endpoints
        if services is None or endpoints is None:
            raise RuntimeError("start() first")

        async def synced() -> None:
            await services.synced.wait()
            await endpoints.synced.wait()
            await self._reconcile_async()

        await asyncio.wait_for(synced(), timeout=timeout)

    async def stop(self) -> None:
        """Close every listener and every open connection."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        for inf in (self._services, self._endpoints):
            if inf is not None:
                await inf.stop()
        for lst in list(self._listeners.values()):
            self._close_listener(lst)
        self._listeners.clear()
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def listeners(self) -> dict[tuple[str, int], PortKey]:
        """The (ip, port) addresses served now and the service port behind each."""
        return {addr: lst.key for addr, lst in self._listeners.items() if lst.server is not None}

    def backends(self, key: PortKey) -> list[tuple[str, int]]:
        """The ready endpoints of a service port right now."""
        return endpoint_backends(
            self._endpoints_by_name.get((key.namespace, key.name)), key.port_name
        )

    # -- watch callbacks ---------------------------------------------------------------

    def _on_service(self, etype: str, obj: JSON) -> None:
        self._changed.set()

    def _on_endpoints(self, etype: str, obj: JSON) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if etype == "DELETED":
            self._endpoints_by_name.pop(key, None)
        else:
            self._endpoints_by_name[key] = obj

    # -- listeners ---------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.retry_interval)
            self._changed.clear()
            try:
                await self._reconcile_async()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proxy: reconcile failed")

    def _desired(self) -> dict[tuple[str, int], PortKey]:
        desired: dict[tuple[str, int], PortKey] = {}
        if self._services is None:
            return desired
        for svc in self._services.cache.values():
            for ip, port, key in service_ports(svc):
                desired[(ip, port)] = key
        return desired

    async def _reconcile_async(self) -> None:
        async with self._lock:
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        desired = self._desired()
        for addr, old in list(self._listeners.items()):
            if addr not in desired:
                self._close_listener(old)
                del self._listeners[addr]
        for addr, key in desired.items():
            lst = self._listeners.get(addr)
            if lst is None:
                lst = self._listeners[addr] = _Listener(addr[0], addr[1], key)
            lst.key = key
            if lst.server is None:
                await self._open(lst)

    async def _open(self, lst: _Listener) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._connections.add(task)
            try:
                await self._forward(lst.key, reader, writer)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proxy: connection to %s/%s failed", lst.key.namespace, lst.key.name)
            finally:
                if task is not None:
                    self._connections.discard(task)

        try:
            lst.server = await asyncio.start_server(handle, lst.ip, lst.port, reuse_address=True)
            log.info(
                "proxy: %s:%d -> service %s/%s port %r",
                lst.ip,
                lst.port,
                lst.key.namespace,
                lst.key.name,
                lst.key.port_name,
            )
        except OSError as exc:
            lst.failures += 1
            (log.warning if lst.failures == 1 else log.debug)(
                "proxy: cannot listen on %s:%d for %s/%s: %s (retrying)",
                lst.ip,
                lst.port,
                lst.key.namespace,
                lst.key.name,
                exc,
            )

    def _close_listener(self, lst: _Listener) -> None:
        if lst.server is not None:
            lst.server.close()
            lst.server = None
            log.info("proxy: closed %s:%d", lst.ip, lst.port)

    # -- forwarding --------------------------------------------------------------------

    def _pick(self, key: PortKey) -> list[tuple[str, int]]:
        """Backends to try, in order, starting at the round-robin position."""
        backends = self.backends(key)
        if not backends:
            return []
        start = self._rr.get(key, 0) % len(backends)
        self._rr[key] = start + 1
        return backends[start:] + backends[:start]

    async def _forward(
        self, key: PortKey, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            for ip, port in self._pick(key):
                try:
                    up_reader, upstream = await asyncio.wait_for(
                        asyncio.open_connection(ip, port), timeout=self.connect_timeout
                    )
                    break
                except (OSError, TimeoutError) as exc:
                    log.debug("proxy: endpoint %s:%d of %s: %s", ip, port, key.name, exc)
            if upstream is None:
                return  # no ready endpoint: close the client's connection
            self._writers.add(upstream)
            await asyncio.gather(
                _pipe(reader, upstream, writer), _pipe(up_reader, writer, upstream)
            )
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    _close(w)


async def _pipe(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_writer: asyncio.StreamWriter
) -> None:
    """Copy until EOF, then half-close `dst`; on any error abort both connections."""
    try:
        while True:
            data = await src.read(_BUFFER)
            if not data:
                if dst.can_write_eof() and not dst.is_closing():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError, RuntimeError):
        dst.transport.abort()
        src_writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
