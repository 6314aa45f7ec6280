"""Children, seen through kopf indexes, and their events, which run their owner's pass.

Only objects that carry `elasticlm.io/role` are watched (a server-side label selector
set in `main.configure`), so a cluster's other pods cost nothing. Each child is indexed
under its controller, (namespace, owner kind, owner name); a pass reads its children
from there instead of LISTing them. kopf cannot queue another object's handler, so a
child's event calls its owner kind's pass directly (`register_owner_pass`).

A kind that needs another child kind (a Deployment, a Secret) adds its index and event
handler here, as a pair like the two below, and a label selector in `main.configure`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from lmoperator.api import kinds
from lmoperator.builders.pods import ROLE_LABEL
from lmoperator.handlers.common import Logger, OwnerKey, child_index_entry
from lmoperator.reconcile.children import controller_of

# (memo, namespace, owner name, the handler's keyword arguments with the indexes, logger)
OwnerPass = Callable[[Any, str, str, Mapping[str, Any], Logger], None]
_OWNER_PASSES: dict[str, OwnerPass] = {}

# Index names (kopf passes each index to every handler as a keyword argument).
PODS_INDEX = "owned_pods"
SERVICES_INDEX = "owned_services"
WATCHED_CHILD_KINDS = (kinds.POD, kinds.K8S_SERVICE)
OURS = {ROLE_LABEL: kopf.PRESENT}


def register_owner_pass(kind: kinds.ResourceKind, run: OwnerPass) -> None:
    """Let children's events of an owner of `kind` run `run` (a non-blocking pass)."""
    _OWNER_PASSES[kind.kind] = run


def _run_owner_pass(
    memo: Any, namespace: str | None, body: Mapping[str, Any], handler_kwargs: Mapping[str, Any]
) -> None:
    controller = controller_of(body)
    if controller is None:
        return
    _, kind, name = controller
    run = _OWNER_PASSES.get(kind)
    if run is not None:
        run(memo, namespace or "default", name, handler_kwargs, handler_kwargs["logger"])


@kopf.index(kinds.POD.version, kinds.POD.plural, labels=OURS)
def owned_pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict[OwnerKey, dict[str, Any]]:
    return child_index_entry(namespace, body)


@kopf.index(kinds.K8S_SERVICE.version, kinds.K8S_SERVICE.plural, labels=OURS)
def owned_services(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[OwnerKey, dict[str, Any]]:
    return child_index_entry(namespace, body)


@kopf.on.event(kinds.POD.version, kinds.POD.plural, labels=OURS)
def pod_event(memo: Any, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    _run_owner_pass(memo, namespace, body, kwargs)


@kopf.on.event(kinds.K8S_SERVICE.version, kinds.K8S_SERVICE.plural, labels=OURS)
def service_event(memo: Any, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    _run_owner_pass(memo, namespace, body, kwargs)
