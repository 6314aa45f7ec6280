"""Helpers of the conformance suite: polling, raw HTTP, watch streams, manifests.

Everything here talks to the cluster through the official `kubernetes` client's
connection settings (host, TLS, token), so the same code drives devcluster and a real
cluster (ELASTICLM_E2E=1).
"""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import kubernetes
import pytest
import urllib3
import yaml

from tests.integration.harness import E2E
from tests.kubeclient import CoreApi
from tests.waiting import wait_for

T = TypeVar("T")
Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[3]
CRDS_DIR = REPO / "crds"
EXAMPLES_DIR = REPO / "manifests" / "examples"

GROUP = "elasticlm.io"
VERSION = "v1alpha1"
LMTJ = "lmtrainingjobs"
LMS = "lmservices"

#: The image pods name. devcluster records it and runs `python` from its own venv; a real
#: cluster pulls it, so the same pod manifests run there.
PYTHON_IMAGE = "python:3.12-alpine"

#: How long pods get to start, become ready, restart... (image pulls on real clusters).
POD_TIMEOUT = 180.0 if E2E else 30.0
#: How long controllers (garbage collector, namespace deletion) get on a real cluster.
CONTROLLER_TIMEOUT = 120.0 if E2E else 20.0

ApiException = kubernetes.client.ApiException

#: Objects a real cluster creates in every namespace by itself (the root CA publisher);
#: tests that list or watch a whole namespace leave them out.
CLUSTER_MADE = ("kube-root-ca.crt",)


# --------------------------------------------------------------------------- polling

#: What a poll of a cluster that is still catching up may raise: an object that is not
#: there yet (404), a server or a pod that does not answer yet. `wait_for` retries these.
NOT_YET: tuple[type[Exception], ...] = (ApiException, urllib3.exceptions.HTTPError, OSError)


def gone(read: Callable[[], Any]) -> bool:
    """True when `read()` answers 404 NotFound."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


# --------------------------------------------------------------------------- errors


def status_of(exc: ApiException) -> Obj:
    """The `Status` object of an API error response."""
    assert exc.body, f"error {exc.status} without a body"
    body: Obj = json.loads(exc.body)
    assert body.get("kind") == "Status", body
    return body


def api_error(expected_code: int, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
    """Call and expect an ApiException with HTTP `expected_code`; returns its Status."""
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    status = status_of(info.value)
    assert info.value.status == expected_code, status
    assert status["code"] == expected_code, status
    assert status["status"] == "Failure", status
    return status


def cause_fields(status: Obj) -> list[str]:
    return [c.get("field", "") for c in (status.get("details") or {}).get("causes", [])]


# --------------------------------------------------------------------------- raw HTTP


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def json(self) -> Any:
        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"<{self.status} {self.data[:500]!r}>"


def _auth_headers(api: kubernetes.client.ApiClient) -> dict[str, str]:
    headers: dict[str, str] = {}
    api.update_params_for_auth(headers, [], ["BearerToken"], "", "GET", None)
    return headers


def url_of(api: kubernetes.client.ApiClient, path: str, query: dict[str, Any] | None) -> str:
    url = str(api.configuration.host).rstrip("/") + path
    if query:
        url += "?" + urlencode(query)
    return url


def raw(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    body: bytes | str | Obj | list[Any] | None = None,
    content_type: str | None = None,
    query: dict[str, Any] | None = None,
    accept: str = "application/json",
    timeout: float = 30.0,
) -> RawResponse:
    """One HTTP request with the client's connection and credentials, body sent as is."""
    headers = {"Accept": accept, **_auth_headers(api)}
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
        content_type = content_type or "application/json"
    if content_type:
        headers["Content-Type"] = content_type
    response = api.rest_client.pool_manager.request(
        method,
        url_of(api, path, query),
        body=body,
        headers=headers,
        timeout=urllib3.Timeout(total=timeout),
        preload_content=True,
        retries=False,
    )
    return RawResponse(response.status, dict(response.headers), response.data)


def get_json(api: kubernetes.client.ApiClient, path: str, **query: Any) -> Any:
    response = raw(api, "GET", path, query=query or None)
    assert response.status == 200, response
    return response.json()


# --------------------------------------------------------------------------- watching


class WatchStream:
    """A raw watch (`?watch=1`) read by a background thread into a queue of events.

    `ended` is set when the server closes the stream; `status` is the HTTP status.
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        path: str,
        timeout: float = 60.0,
        skip_names: tuple[str, ...] = CLUSTER_MADE,
        **query: Any,
    ) -> None:
        self.skip_names = skip_names
        query = {"watch": "1", **{k: v for k, v in query.items() if v is not None}}
        headers = {"Accept": "application/json", **_auth_headers(api)}
        # a connection pool of its own: the stream's connection never goes back to the
        # client's pool, and closing it cannot block the client
        self._client = kubernetes.client.ApiClient(api.configuration)
        self.response = self._client.rest_client.pool_manager.request(
            "GET",
            url_of(api, path, query),
            headers=headers,
            timeout=urllib3.Timeout(connect=10, read=timeout),
            preload_content=False,
            retries=False,
        )
        self.status = self.response.status
        self.events: queue.Queue[Obj] = queue.Queue()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        try:
            for chunk in self.response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self._put(json.loads(line))
            if buffer.strip():
                self._put(json.loads(buffer))
        except Exception as exc:  # a closed connection ends the stream
            self.error = exc
        finally:
            self.ended.set()

    def _put(self, event: Obj) -> None:
        obj = event.get("object") or {}
        if obj.get("metadata", {}).get("name") not in self.skip_names:
            self.events.put(event)

    def next(self, timeout: float = 10.0) -> Obj:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no watch event within {timeout}s") from None

    def until(self, predicate: Callable[[Obj], bool], timeout: float = 10.0) -> list[Obj]:
        """Events up to and including the first one matching `predicate`."""
        seen: list[Obj] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching watch event within {timeout}s; saw {seen}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(event)
            if predicate(event):
                return seen

    def drain(self) -> list[Obj]:
        out: list[Obj] = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        # Shut the socket down first: that wakes the reader thread blocked in recv(),
        # which otherwise holds the buffer's lock that close() needs.
        connection = getattr(self.response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.response.close()
        self._client.rest_client.pool_manager.clear()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def named(name: str) -> Callable[[Obj], bool]:
    return lambda event: event["object"].get("metadata", {}).get("name") == name


# --------------------------------------------------------------------------- manifests


def load_yaml(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def example(kind: str) -> Obj:
    """The example manifest of `kind` from manifests/examples: the plain one
    (training-job.yaml), not a variant (training-job-autoscaled.yaml)."""
    for path in sorted(EXAMPLES_DIR.glob("*.yaml"), key=lambda p: (len(p.stem), p.name)):
        for doc in load_yaml(path):
            if doc["kind"] == kind:
                return doc
    raise LookupError(kind)


def training_job(name: str = "job", **spec: Any) -> Obj:
    """The example LMTrainingJob under another name, with `spec` keys overridden."""
    job = copy.deepcopy(example("LMTrainingJob"))
    job["metadata"] = {"name": name}
    job["spec"].update(spec)
    return job


def lm_service(name: str = "svc", **spec: Any) -> Obj:
    svc = copy.deepcopy(example("LMService"))
    svc["metadata"] = {"name": name}
    svc["spec"].update(spec)
    return svc


def python_pod(
    name: str,
    code: str,
    *,
    restart_policy: str = "Never",
    labels: dict[str, str] | None = None,
    env: list[Obj] | None = None,
    grace: int | None = None,
    **container: Any,
) -> Obj:
    """A pod with one container `main` running `python -u -c <code>`."""
    spec: Obj = {
        "restartPolicy": restart_policy,
        "containers": [
            {
                "name": "main",
                "image": PYTHON_IMAGE,
                "command": ["python", "-u", "-c", code],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    *(env or []),
                ],
                **container,
            }
        ],
    }
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


#: A tiny HTTP server bound to the pod IP on port 8080, answering its pod name.
HTTP_SERVER = """
import http.server, os
name = os.environ.get("HOSTNAME", "?").encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *args):
        pass
print("serving on", os.environ["POD_IP"], flush=True)
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


def pod_phase(core: CoreApi, name: str, namespace: str) -> str:
    return core.read_namespaced_pod(name, namespace).status.phase or ""


def container_status(core: CoreApi, name: str, namespace: str, container: str = "main") -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    for status in pod.status.container_statuses or []:
        if status.name == container:
            return status
    return None


def pod_ready(core: CoreApi, name: str, namespace: str) -> bool:
    pod = core.read_namespaced_pod(name, namespace)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_pod_phase(core: CoreApi, name: str, namespace: str, *phases: str) -> str:
    def reached() -> str | None:
        phase = pod_phase(core, name, namespace)
        return phase if phase in phases else None

    return wait_for(
        reached,
        POD_TIMEOUT,
        f"pod {name} to reach phase {' or '.join(phases)}",
        retry_on=NOT_YET,
    )


def wait_default_service_account(core: CoreApi, namespace: str) -> None:
    """A real cluster refuses pods until the namespace's `default` ServiceAccount exists."""
    if E2E:
        wait_for(
            lambda: core.read_namespaced_service_account("default", namespace),
            CONTROLLER_TIMEOUT,
            "the default ServiceAccount",
            retry_on=NOT_YET,
        )


# --------------------------------------------------------------------------- processes


class LineReader:
    """Reads a subprocess's stdout lines in a thread (for `kubectl get -w`, `logs -f`)."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_line(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        def find() -> str | None:
            for line in self.snapshot():
                if predicate(line):
                    return line
            if self.process.poll() is not None:
                self._thread.join(timeout=1)
                for line in self.snapshot():
                    if predicate(line):
                        return line
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(
                    f"process ended ({self.process.returncode}) before {what}; "
                    f"stdout {self.snapshot()}, stderr {stderr}"
                )
            return None

        return wait_for(find, timeout, lambda: f"{what}; lines: {self.snapshot()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._thread.join(timeout=5)

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def iter_lines(stream: Any) -> Iterator[str]:
    """Lines of a urllib3 response streamed with `_preload_content=False`."""
    buffer = b""
    for chunk in stream.stream(1024, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()
    if buffer:
        yield buffer.decode()
