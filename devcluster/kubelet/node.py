"""The kubelet: watches the pods bound to its node and runs them.

`Kubelet` lists and watches the pods with `spec.nodeName=<node_name>`, creates a
`pod.Pod` (or a `simulate.SimPod` in simulate mode) for each, hands pod updates and
deletions to it, and holds what pods share: the API client, the probe HTTP session, the
pod IP range, the status and deletion queues (`status`), Events and background tasks.
See the package docstring for what the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from devcluster.informer import ApiError, Informer, RestClient
from devcluster.kubelet.base import PodBase, grace_period, pod_meta, pod_spec
from devcluster.kubelet.mountns_runner import mount_namespace_problem
from devcluster.kubelet.pod import Pod
from devcluster.kubelet.processes import LIVE_GROUPS, reap_strays_sync
from devcluster.kubelet.simulate import SimPod
from devcluster.kubelet.status import BatchQueue, send_status
from devcluster.podspec.common import JSON, rfc3339
from devcluster.podspec.env import Sources, kubernetes_service_env, referenced_sources
from devcluster.podspec.ips import IPAllocator
from devcluster.podspec.volumes import token_key, token_sources

log = logging.getLogger(__name__)


class Kubelet:
    """Runs the pods the API server binds to `node_name` (see the package docstring).

    Args:
        api_url: base URL of the API server, e.g. `http://127.0.0.1:6443`.
        state_dir: where logs and volumes live (`devcluster.paths`).
        node_name: the `spec.nodeName` this kubelet serves.
        simulate: mark pods Running and Ready without starting processes.
        pod_cidr: loopback range the pod IPs come from (handed out round robin from a
            random starting address; see `podspec.IPAllocator`).
        host_ip: `status.hostIP` (and the IP of hostNetwork pods).
        backoff_base, backoff_max: restart back-off (first restart immediate, then
            base doubling to max); reset after `2 * backoff_max` seconds of running.
        stop_timeout: at most this long per pod for SIGTERM to work in `stop()` (and
            when a pod vanishes from the API) before SIGKILL.
        status_concurrency: parallel status writes and deletions.
        keep_pod_dirs: keep logs and volumes of pods that are gone (default: removed).
        events: post Kubernetes Events (not in simulate mode).
        extra_env: variables every container gets on top of the kubelet's own
            environment; the pod's env wins.
        token: the bearer token the kubelet sends to the API server (devcluster's
            admin token; none for an API server that needs none).
        service_url: where pods reach the API server (`KUBERNETES_SERVICE_HOST` and
            `_PORT`; devcluster's HTTPS endpoint when it has one); default `api_url`.
        mount_namespaces: give each container a private mount namespace with its
            volumes bind-mounted at their real paths (`mountns`); None (the default)
            uses them when this machine allows (Linux, root or CAP_SYS_ADMIN).
    """

    def __init__(
        self,
        api_url: str,
        state_dir: Path,
        node_name: str = "devcluster",
        simulate: bool = False,
        *,
        pod_cidr: str = "127.10.0.0/16",
        host_ip: str = "127.0.0.1",
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        stop_timeout: float = 10.0,
        status_concurrency: int = 32,
        keep_pod_dirs: bool = False,
        events: bool = True,
        extra_env: Mapping[str, str] | None = None,
        token: str | None = None,
        service_url: str | None = None,
        mount_namespaces: bool | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.state_dir = Path(state_dir).resolve()
        self.node_name = node_name
        self.simulate = simulate
        self.host_ip = host_ip
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.backoff_reset = 2 * backoff_max
        self.stop_timeout = stop_timeout
        self.keep_pod_dirs = keep_pod_dirs
        self.events_enabled = events and not simulate
        self.extra_env = dict(extra_env or {})
        self.ips = IPAllocator(pod_cidr)
        self._token = token
        self.mount_namespaces = mount_namespaces
        url = urlsplit(service_url or self.api_url)
        self.kubernetes_env = kubernetes_service_env(
            url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
        )
        self.pods: dict[str, PodBase] = {}
        self._status_queue = BatchQueue("pod status", self._write_status_key, status_concurrency)
        self._delete_queue = BatchQueue("pod delete", self._delete_key, status_concurrency)
        self._events: asyncio.Queue[JSON] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._client: RestClient | None = None
        self._informer: Informer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._stopped = False

    # -- public ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching pods; returns at once (see `wait_synced`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.simulate:
            n = await asyncio.to_thread(reap_strays_sync, str(self.state_dir))
            if n:
                log.warning("killed %d processes left behind by a previous kubelet", n)
            if self.mount_namespaces is None:
                problem = await asyncio.to_thread(mount_namespace_problem)
                self.mount_namespaces = problem is None
                if problem:
                    log.warning(
                        "no mount namespaces for pods (%s): volumes, including the "
                        "service-account token, are reachable only through rewritten paths "
                        "and DEVCLUSTER_MOUNT_* variables, not at their mountPath",
                        problem,
                    )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=60),
            headers={
                "User-Agent": "kubelet/devcluster",  # the `client` of /metrics
                **({"Authorization": f"Bearer {self._token}"} if self._token else {}),
            },
        )
        self._probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
        self._client = RestClient(self.api_url, self._session)
        self._informer = Informer(
            self._client,
            "/api/v1/pods",
            self._on_pod_event,
            params={"fieldSelector": f"spec.nodeName={self.node_name}"},
            name="kubelet pods",
        )
        self._events = asyncio.Queue(maxsize=1000)
        self._loops = [
            asyncio.create_task(self._status_queue.run(), name="kubelet status writer"),
            asyncio.create_task(self._delete_queue.run(), name="kubelet deleter"),
            asyncio.create_task(self._event_poster(), name="kubelet events"),
        ]
        self._informer.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until the first pod list has been processed."""
        assert self._informer is not None, "start() first"
        await asyncio.wait_for(self._informer.synced.wait(), timeout=timeout)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until every pending status write and deletion has been sent."""

        async def idle() -> None:
            while not (self._status_queue.idle.is_set() and self._delete_queue.idle.is_set()):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(idle(), timeout=timeout)

    async def stop(self) -> None:
        """Terminate every container (SIGTERM; SIGKILL after the pod's grace period,
        at most `stop_timeout`), then stop watching. Pods stay in the API."""
        if self._stopped:
            return
        self._stopped = True
        if self._informer is not None:
            await self._informer.stop()
        pods = [p for p in self.pods.values() if isinstance(p, Pod)]
        if pods:
            await asyncio.gather(
                *(p.stop_containers(min(grace_period(p.obj), self.stop_timeout)) for p in pods),
                return_exceptions=True,
            )
        for task in list(self._tasks) + self._loops:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._loops, return_exceptions=True)
        for p in self.pods.values():
            if isinstance(p, Pod):
                for c in p.containers:
                    if c.pgid is not None:
                        LIVE_GROUPS.discard(c.pgid)
        if self._session is not None:
            await self._session.close()
        if self._probe_session is not None:
            await self._probe_session.close()

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """The IP this kubelet gave the pod, if it runs it."""
        for p in self.pods.values():
            if p.namespace == namespace and p.name == name:
                return p.ip
        return None

    # -- internals used by pods --------------------------------------------------------

    @property
    def client(self) -> RestClient:
        assert self._client is not None, "start() first"
        return self._client

    @property
    def probe_session(self) -> aiohttp.ClientSession:
        assert self._probe_session is not None, "start() first"
        return self._probe_session

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task whose exception is logged, never lost or fatal."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def mark_dirty(self, uid: str) -> None:
        self._status_queue.add(uid)

    def forget(self, pod: PodBase) -> None:
        if self.pods.get(pod.uid) is pod:
            del self.pods[pod.uid]

    async def fetch_sources(self, namespace: str, pod: JSON, *, tokens: bool = False) -> Sources:
        """The ConfigMaps and Secrets the pod refers to; with `tokens`, also a fresh
        service-account token (TokenRequest bound to the pod) per projected token source."""
        cms, secrets = referenced_sources(pod)
        sources = Sources()
        if tokens:
            for source in token_sources(pod):
                key = token_key(source)
                if key not in sources.tokens:
                    sources.tokens[key] = await self.request_token(pod, source)
        ns = quote(namespace)
        for name in sorted(cms):
            sources.configmaps[name] = await self._get_or_none(
                f"/api/v1/namespaces/{ns}/configmaps/{quote(name)}"
            )
        for name in sorted(secrets):
            sources.secrets[name] = await self._get_or_none(
                f"/api/v1/namespaces/{ns}/secrets/{quote(name)}"
            )
        return sources

    async def request_token(self, pod: JSON, source: JSON) -> str:
        """A token of the pod's service account for a projected serviceAccountToken
        source, bound to the pod (as the kubelet's token manager asks for it)."""
        meta, spec = pod_meta(pod), pod_spec(pod)
        account = str(spec.get("serviceAccountName") or "default")
        body: JSON = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds") or 3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                },
            },
        }
        path = (
            f"/api/v1/namespaces/{quote(str(meta.get('namespace') or 'default'))}"
            f"/serviceaccounts/{quote(account)}/token"
        )
        answer = await self.client.request("POST", path, body=body)
        token = (answer.get("status") or {}).get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(500, f"TokenRequest for {account} returned no token")
        return token

    async def _get_or_none(self, path: str) -> JSON | None:
        try:
            obj = await self.client.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    async def list_services(self, namespace: str) -> list[JSON]:
        lst = await self.client.get(f"/api/v1/namespaces/{quote(namespace)}/services")
        items = lst.get("items") if isinstance(lst, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]

    def post_event(
        self, pod: PodBase, etype: str, reason: str, message: str, field_path: str | None
    ) -> None:
        if not self.events_enabled or self._events is None:
            return
        now = rfc3339(time.time())
        involved: JSON = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        }
        if field_path:
            involved["fieldPath"] = field_path
        event: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{pod.name}.{uuid.uuid4().hex[:16]}",
                "namespace": pod.namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": etype,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
        }
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(event)

    async def _event_poster(self) -> None:
        assert self._events is not None
        while True:
            event = await self._events.get()
            ns = quote(str(event["metadata"]["namespace"]))
            try:
                await self.client.request("POST", f"/api/v1/namespaces/{ns}/events", body=event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # events are best effort
                log.debug("event not posted: %s", exc)

    # -- pod events from the API -------------------------------------------------------

    def _on_pod_event(self, etype: str, obj: JSON) -> None:
        uid = str(pod_meta(obj).get("uid", ""))
        if not uid:
            return
        pod = self.pods.get(uid)
        if etype == "DELETED" or pod_spec(obj).get("nodeName") != self.node_name:
            if pod is not None:
                self._vanished(pod, obj)
            return
        if pod is None:
            if self._stopped:
                return
            pod = SimPod(self, obj) if self.simulate else Pod(self, obj)
            self.pods[uid] = pod
            if isinstance(pod, Pod):
                pod.start()
                if pod_meta(obj).get("deletionTimestamp"):
                    pod.update(obj)
            elif pod_meta(obj).get("deletionTimestamp"):
                self._delete_queue.add(uid)
            else:
                self.mark_dirty(uid)
            return
        if isinstance(pod, Pod):
            pod.update(obj)
            return
        pod.obj = obj
        if pod_meta(obj).get("deletionTimestamp"):
            self._delete_queue.add(uid)
        elif pod_spec(obj).get("readinessGates"):
            self.mark_dirty(uid)

    def _vanished(self, pod: PodBase, obj: JSON) -> None:
        if isinstance(pod, Pod):
            if not pod.gone:
                pod.vanished(obj)
        else:
            self.forget(pod)
            pod.release_ip()

    # -- writes ------------------------------------------------------------------------

    async def _write_status_key(self, uid: str) -> bool:
        pod = self.pods.get(uid)
        if pod is None or (isinstance(pod, Pod) and pod.gone):
            return True
        return await self.write_status(pod)

    async def write_status(self, pod: PodBase) -> bool:
        """Send the pod's status if it changed since the last write; False to retry."""
        return await send_status(self.client, pod)

    async def _delete_key(self, uid: str) -> bool:
        pod = self.pods.get(uid)
        if pod is None:
            return True
        return await self._delete_once(pod)

    async def delete_pod(self, pod: PodBase) -> None:
        """DELETE the pod (grace 0, uid precondition), retrying until it is gone."""
        delay = 0.2
        while not await self._delete_once(pod):
            if isinstance(pod, Pod) and pod.gone:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _delete_once(self, pod: PodBase) -> bool:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": pod.uid},
        }
        try:
            await self.client.request(
                "DELETE", pod.api_path, params={"gracePeriodSeconds": "0"}, body=body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                return True  # already gone, or another pod of the same name now
            log.warning("deleting %s/%s: %s", pod.namespace, pod.name, exc)
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("deleting %s/%s: %s", pod.namespace, pod.name, exc)
            return False
        return True
