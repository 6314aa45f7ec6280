"""Probe specs, with the Kubernetes defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from devcluster.podspec.common import JSON

# --------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True)
class ProbeSpec:
    """A probe with Kubernetes' defaults applied and named ports resolved."""

    kind: Literal["startup", "liveness", "readiness"]
    handler: Literal["httpGet", "tcpSocket", "exec", "grpc", "none"]
    port: int | None = None
    host: str | None = None
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None
    #: Why the probe cannot work (e.g. an unknown named port): it then always fails.
    error: str | None = None


def _int(value: Any, default: int, minimum: int) -> int:
    try:
        return max(minimum, int(value)) if value is not None else default
    except (TypeError, ValueError):
        return default


def resolve_port(port: Any, container: JSON) -> int | None:
    """A port given by number or by the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for p in container.get("ports") or []:
            if p.get("name") == port and p.get("containerPort") is not None:
                return int(p["containerPort"])
    return None


def parse_probe(
    kind: Literal["startup", "liveness", "readiness"], probe: JSON | None, container: JSON
) -> ProbeSpec | None:
    """The container's probe of that kind, or None when it has none."""
    if not probe:
        return None
    common: dict[str, Any] = {
        "kind": kind,
        "initial_delay": float(_int(probe.get("initialDelaySeconds"), 0, 0)),
        "period": float(_int(probe.get("periodSeconds"), 10, 1)),
        "timeout": float(_int(probe.get("timeoutSeconds"), 1, 1)),
        "success_threshold": 1
        if kind != "readiness"
        else _int(probe.get("successThreshold"), 1, 1),
        "failure_threshold": _int(probe.get("failureThreshold"), 3, 1),
        "termination_grace": (
            float(probe["terminationGracePeriodSeconds"])
            if isinstance(probe.get("terminationGracePeriodSeconds"), int)
            else None
        ),
    }
    if probe.get("httpGet") is not None:
        h = probe["httpGet"]
        port = resolve_port(h.get("port"), container)
        headers = tuple(
            (str(x.get("name", "")), str(x.get("value", ""))) for x in h.get("httpHeaders") or []
        )
        path = str(h.get("path") or "/")
        return ProbeSpec(
            handler="httpGet",
            port=port,
            host=h.get("host") or None,
            path=path if path.startswith("/") else "/" + path,
            scheme=str(h.get("scheme") or "HTTP").upper(),
            headers=headers,
            error=None if port is not None else f"unknown port {h.get('port')!r}",
            **common,
        )
    if probe.get("tcpSocket") is not None:
        t = probe["tcpSocket"]
        port = resolve_port(t.get("port"), container)
        return ProbeSpec(
            handler="tcpSocket",
            port=port,
            host=t.get("host") or None,
            error=None if port is not None else f"unknown port {t.get('port')!r}",
            **common,
        )
    if probe.get("exec") is not None:
        cmd = tuple(str(x) for x in probe["exec"].get("command") or [])
        return ProbeSpec(
            handler="exec",
            command=cmd,
            error=None if cmd else "exec probe without a command",
            **common,
        )
    if probe.get("grpc") is not None:
        port = resolve_port(probe["grpc"].get("port"), container)
        return ProbeSpec(handler="grpc", port=port, **common)
    return ProbeSpec(handler="none", error="probe has no handler", **common)
