"""Children, seen through kopf indexes, and their events, which run their owner's pass.

Only objects that carry `elasticlm.io/role` are watched (a server-side label selector
set in `main.configure`), so a cluster's other pods cost nothing. Each child is indexed
under its controller, (namespace, owner kind, owner name); a pass reads its children
from there instead of LISTing them. kopf cannot queue another object's handler, so a
child's event calls its owner kind's pass directly (`register_owner_pass`).

A kind that needs another child kind (a Deployment, a Secret) adds its index and event
handler here, as a pair like the ones below, and a label selector in `main.configure`.

Pods that a Deployment's ReplicaSet controls (an LMService's servers) have no owner of
ours as their controller; they are indexed and routed by an owner label instead
(`register_owner_label`).
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
DEPLOYMENTS_INDEX = "owned_deployments"
PDBS_INDEX = "owned_pdbs"
NETWORK_POLICIES_INDEX = "owned_network_policies"
# Secrets are not watched: the operator only creates them (no read access to any).
WATCHED_CHILD_KINDS = (
    kinds.POD,
    kinds.K8S_SERVICE,
    kinds.DEPLOYMENT,
    kinds.POD_DISRUPTION_BUDGET,
    kinds.NETWORK_POLICY,
)
OURS = {ROLE_LABEL: kopf.PRESENT}
# Owner label -> owner kind, for children whose controller is not one of ours.
_OWNER_LABELS: dict[str, str] = {}


def register_owner_pass(kind: kinds.ResourceKind, run: OwnerPass) -> None:
    """Let children's events of an owner of `kind` run `run` (a non-blocking pass)."""
    _OWNER_PASSES[kind.kind] = run


def register_owner_label(label: str, kind: kinds.ResourceKind) -> None:
    """Index and route pods that carry `label` under the owner of `kind` it names."""
    _OWNER_LABELS[label] = kind.kind


def _owner_by_label(body: Mapping[str, Any]) -> tuple[str, str] | None:
    labels = (body.get("metadata") or {}).get("labels") or {}
    for label, kind in _OWNER_LABELS.items():
        if isinstance(labels.get(label), str):
            return kind, labels[label]
    return None


def _owner(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(owner kind, owner name) of a child: its controller when that is a kind we know,
    else an owner label."""
    controller = controller_of(body)
    if controller is not None and kinds.kind_of(controller[0], controller[1]) is not None:
        return controller[1], controller[2]
    return _owner_by_label(body)


def _pod_index_entry(namespace: str | None, body: Mapping[str, Any]) -> dict[OwnerKey, Any]:
    controller = controller_of(body)
    if controller is not None and kinds.kind_of(controller[0], controller[1]) is not None:
        return child_index_entry(namespace, body)
    owner = _owner_by_label(body)
    if owner is None:
        return {}
    return {(namespace or "", *owner): dict(body)}  # as child_index_entry: no deep copy


def _run_owner_pass(
    memo: Any, namespace: str | None, body: Mapping[str, Any], handler_kwargs: Mapping[str, Any]
) -> None:
    owner = _owner(body)
    if owner is None:
        return
    kind, name = owner
    run = _OWNER_PASSES.get(kind)
    if run is not None:
        run(memo, namespace or "default", name, handler_kwargs, handler_kwargs["logger"])


@kopf.index(kinds.POD.version, kinds.POD.plural, labels=OURS)
def owned_pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict[OwnerKey, dict[str, Any]]:
    return _pod_index_entry(namespace, body)


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


@kopf.index(kinds.DEPLOYMENT.group, kinds.DEPLOYMENT.version, kinds.DEPLOYMENT.plural, labels=OURS)
def owned_deployments(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[OwnerKey, dict[str, Any]]:
    return child_index_entry(namespace, body)


@kopf.on.event(
    kinds.DEPLOYMENT.group, kinds.DEPLOYMENT.version, kinds.DEPLOYMENT.plural, labels=OURS
)
def deployment_event(memo: Any, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    _run_owner_pass(memo, namespace, body, kwargs)


@kopf.index(
    kinds.POD_DISRUPTION_BUDGET.group,
    kinds.POD_DISRUPTION_BUDGET.version,
    kinds.POD_DISRUPTION_BUDGET.plural,
    labels=OURS,
)
def owned_pdbs(namespace: str | None, body: kopf.Body, **_: Any) -> dict[OwnerKey, dict[str, Any]]:
    return child_index_entry(namespace, body)


@kopf.index(
    kinds.NETWORK_POLICY.group,
    kinds.NETWORK_POLICY.version,
    kinds.NETWORK_POLICY.plural,
    labels=OURS,
)
def owned_network_policies(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[OwnerKey, dict[str, Any]]:
    return child_index_entry(namespace, body)


@kopf.on.event(
    kinds.NETWORK_POLICY.group,
    kinds.NETWORK_POLICY.version,
    kinds.NETWORK_POLICY.plural,
    labels=OURS,
)
def network_policy_event(memo: Any, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    _run_owner_pass(memo, namespace, body, kwargs)
