"""`pods/log`: a container's log file as the kubelet writes it, tailed, limited or
followed.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from devcluster import paths
from devcluster.apiserver.http import Handlers, query_bool, query_int
from devcluster.resources.types import ResourceType
from devcluster.store import bad_request, now
from devcluster.values import as_dict, as_list


class LogHandlers(Handlers):
    """GET `pods/<name>/log`."""

    log_poll_interval: float

    async def serve_log(
        self, request: web.Request, rt: ResourceType, namespace: str, name: str
    ) -> web.StreamResponse:
        q = request.query
        pod = self.cluster.get(rt, namespace, name)
        spec = as_dict(pod.get("spec"))
        containers = [str(as_dict(c).get("name")) for c in as_list(spec.get("containers"))]
        init = [str(as_dict(c).get("name")) for c in as_list(spec.get("initContainers"))]
        container = q.get("container")
        if not container:
            default = as_dict(pod["metadata"].get("annotations")).get(
                "kubectl.kubernetes.io/default-container"
            )
            if len(containers) == 1:
                container = containers[0]
            elif default in containers:
                container = default
            else:
                message = (
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]"
                )
                if init:
                    message += f" or one of the init containers: [{' '.join(init)}]"
                raise bad_request(message)
        if container not in containers + init:
            raise bad_request(f"container {container} is not valid for pod {name}")
        state_dir = self.cluster.state_dir
        uid = pod["metadata"]["uid"]
        previous = query_bool(q.get("previous"))
        if state_dir is None:
            raise bad_request(f'container "{container}" in pod "{name}" is not available')
        if previous:
            path = paths.previous_log_file(state_dir, namespace, name, uid, container)
            if not path.exists():
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
        else:
            path = paths.container_log_file(state_dir, namespace, name, uid, container)
            if not path.exists():
                reason = "ContainerCreating"
                for status in as_list(
                    as_dict(pod.get("status")).get("containerStatuses")
                ) + as_list(as_dict(pod.get("status")).get("initContainerStatuses")):
                    if as_dict(status).get("name") == container:
                        waiting = as_dict(as_dict(status.get("state")).get("waiting"))
                        reason = waiting.get("reason") or reason
                if as_dict(pod.get("status")).get("phase") in ("Succeeded", "Failed"):
                    raise bad_request(f'container "{container}" in pod "{name}" has no logs')
                raise bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: {reason}'
                )
        tail = query_int(q.get("tailLines"), "tailLines")
        limit_bytes = query_int(q.get("limitBytes"), "limitBytes")
        timestamps = query_bool(q.get("timestamps"))
        follow = query_bool(q.get("follow")) and not previous
        data = path.read_bytes()
        offset = len(data)
        if tail is not None and tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail else b""
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        pending = b""

        async def emit(chunk: bytes, final: bool = False) -> bool:
            """Write; False once limitBytes is reached."""
            nonlocal sent, pending
            if timestamps:
                chunk = pending + chunk
                lines = chunk.split(b"\n")
                last = lines.pop()
                pending = b"" if final else last
                if final and last:
                    lines.append(last)
                stamp = now().strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
                chunk = b"".join(stamp + b" " + line + b"\n" for line in lines if line or final)
            if limit_bytes is not None:
                chunk = chunk[: max(0, limit_bytes - sent)]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            return limit_bytes is None or sent < limit_bytes

        closed = asyncio.Event()
        self._streams.add(closed)
        try:
            going = await emit(data, final=not follow)
            while follow and going and not closed.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    break
                if size > offset:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read(size - offset)
                    offset += len(chunk)
                    going = await emit(chunk)
                    continue
                if size < offset:
                    offset = 0  # truncated or replaced
                    continue
                if self._container_finished(rt, namespace, name, uid, container):
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        rest = handle.read()
                    await emit(rest, final=True)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), self.log_poll_interval)
            if timestamps and pending:
                await emit(b"", final=True)
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(closed)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    def _container_finished(
        self, rt: ResourceType, namespace: str, name: str, uid: str, container: str
    ) -> bool:
        pod = self.cluster.store.get(rt.gr, namespace, name)
        if pod is None or pod["metadata"].get("uid") != uid:
            return True
        status = as_dict(pod.get("status"))
        if status.get("phase") in ("Succeeded", "Failed"):
            return True
        for entry in as_list(status.get("containerStatuses")) + as_list(
            status.get("initContainerStatuses")
        ):
            if as_dict(entry).get("name") == container:
                state = as_dict(entry.get("state"))
                if "terminated" in state and not as_dict(entry).get("started"):
                    restart = as_dict(pod.get("spec")).get("restartPolicy", "Always")
                    if restart == "Never":
                        return True
        return False
