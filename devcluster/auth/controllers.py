"""The controllers of authentication and RBAC, running next to the API server as
kube-controller-manager's do:

- ClusterRole aggregation (pkg/controller/clusterroleaggregation): a ClusterRole with an
  `aggregationRule` gets as `rules` the rules of every other ClusterRole its
  `clusterRoleSelectors` select, in name order, without duplicates; aggregated roles
  that feed others (`view` into `edit` into `admin`) settle in a few passes.
- Service-account token Secrets (pkg/controller/serviceaccount/tokens_controller.go): a
  Secret of type `kubernetes.io/service-account-token` whose
  `kubernetes.io/service-account.name` annotation names an existing service account
  gets `data.token` (a legacy token, see `tokens.legacy_claims`), `data.namespace`,
  `data["ca.crt"]` when the cluster has a CA, and the account's uid in the
  `kubernetes.io/service-account.uid` annotation.
- The root CA publisher (pkg/controller/certificates/rootcacertpublisher): when the
  cluster serves HTTPS, every namespace gets the ConfigMap `kube-root-ca.crt` with the
  CA certificate as `ca.crt`, which the pods' service-account volumes project.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from devcluster import selectors
from devcluster.apiserver.options import Ctx
from devcluster.auth import tokens
from devcluster.auth.rbac import CLUSTER_ROLES
from devcluster.gc import ObjectAPI
from devcluster.store import APIError, Obj, StoreEvent
from devcluster.values import as_dict, as_list

log = logging.getLogger(__name__)

SECRETS = ("", "secrets")
SERVICE_ACCOUNTS = ("", "serviceaccounts")
NAMESPACES = ("", "namespaces")
CONFIG_MAPS = ("", "configmaps")
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


def aggregated_rules(role: Obj, roles: list[Obj]) -> list[Obj]:
    """The rules an aggregated ClusterRole should have, given every ClusterRole."""
    rules: list[Obj] = []
    name = role["metadata"]["name"]
    for raw in as_list(as_dict(role.get("aggregationRule")).get("clusterRoleSelectors")):
        try:
            selector = selectors.label_selector_from_dict(as_dict(raw))
        except selectors.SelectorError:
            continue
        for other in sorted(roles, key=lambda r: str(r["metadata"]["name"])):
            if other["metadata"]["name"] == name:
                continue
            if not selector.matches(as_dict(other["metadata"].get("labels"))):
                continue
            for rule in as_list(other.get("rules")):
                if rule not in rules:
                    rules.append(rule)
    return rules


class AuthControllers:
    """Schedules the passes after the store changes that concern them."""

    def __init__(
        self, cluster: ObjectAPI, signer: tokens.TokenSigner, ca_cert: bytes | None = None
    ) -> None:
        self.cluster = cluster
        self.signer = signer
        self.ca_cert = ca_cert
        self._aggregate = True
        self._secrets: set[tuple[str, str]] = set()
        self._namespaces: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None

    def attach(self) -> None:
        store = self.cluster.store
        for secret in store.items(SECRETS):
            if secret.get("type") == SA_TOKEN_TYPE:
                self._secrets.add((secret["metadata"]["namespace"], secret["metadata"]["name"]))
        self._namespaces.update(n["metadata"]["name"] for n in store.items(NAMESPACES))
        store.add_listener(self.on_event)
        self.run_pending()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    async def stop(self) -> None:
        self._loop = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def on_event(self, event: StoreEvent) -> None:
        if event.gr == CLUSTER_ROLES:
            self._aggregate = True
        elif event.gr == SECRETS and event.type != "DELETED":
            if event.obj.get("type") == SA_TOKEN_TYPE:
                self._secrets.add((event.namespace, event.name))
        elif event.gr == SERVICE_ACCOUNTS and event.type == "ADDED":
            for secret in self.cluster.store.items(SECRETS, event.namespace):
                if secret.get("type") == SA_TOKEN_TYPE:
                    self._secrets.add((event.namespace, secret["metadata"]["name"]))
        elif event.gr == NAMESPACES and event.type != "DELETED":
            self._namespaces.add(event.name)
        elif event.gr == CONFIG_MAPS and event.name == ROOT_CA_CONFIGMAP:
            self._namespaces.add(event.namespace)
        else:
            return
        self._schedule()

    def _schedule(self) -> None:
        if self._loop is None or self._handle is not None or not self._pending():
            return
        try:
            self._handle = self._loop.call_soon(self._run)
        except RuntimeError:  # the loop is closed
            self._handle = None

    def _pending(self) -> bool:
        return bool(self._aggregate or self._secrets or (self._namespaces and self.ca_cert))

    def _run(self) -> None:
        self._handle = None
        try:
            self.run_pending()
        except Exception:
            log.exception("an authentication controller pass failed")

    def run_pending(self) -> None:
        if self._aggregate:
            self._aggregate = False
            self.aggregate()
        secrets, self._secrets = self._secrets, set()
        for namespace, name in sorted(secrets):
            self.fill_token_secret(namespace, name)
        namespaces, self._namespaces = self._namespaces, set()
        if self.ca_cert is not None:
            for namespace in sorted(namespaces):
                self.publish_root_ca(namespace)

    # ---- ClusterRole aggregation

    def aggregate(self, max_rounds: int = 10) -> None:
        rt = self.cluster.registry.storage_type(CLUSTER_ROLES)
        assert rt is not None
        for _ in range(max_rounds):
            changed = False
            roles = self.cluster.store.items(CLUSTER_ROLES)
            for role in roles:
                if not isinstance(role.get("aggregationRule"), dict):
                    continue
                wanted = aggregated_rules(role, roles)
                if wanted == as_list(role.get("rules")):
                    continue

                def change(obj: Obj, wanted: list[Obj] = wanted) -> None:
                    obj["rules"] = wanted

                self.cluster.mutate(rt, "", role["metadata"]["name"], change)
                changed = True
            if not changed:
                break
        self._aggregate = False  # our own writes above need no further pass

    # ---- service-account token secrets

    def fill_token_secret(self, namespace: str, name: str) -> None:
        store = self.cluster.store
        secret = store.get(SECRETS, namespace, name)
        if secret is None or secret.get("type") != SA_TOKEN_TYPE:
            return
        if secret["metadata"].get("deletionTimestamp"):
            return
        annotations = as_dict(secret["metadata"].get("annotations"))
        sa_name = str(annotations.get(SA_NAME_ANNOTATION) or "")
        sa = store.get(SERVICE_ACCOUNTS, namespace, sa_name) if sa_name else None
        if sa is None:
            return  # Kubernetes waits for the account (and validation requires the name)
        data = as_dict(secret.get("data"))
        uid = str(sa["metadata"]["uid"])
        wanted: dict[str, str] = {}
        if not data.get("token") or annotations.get(SA_UID_ANNOTATION) != uid:
            claims = tokens.legacy_claims(namespace, (sa_name, uid), name)
            wanted["token"] = base64.b64encode(self.signer.sign(claims).encode()).decode()
        if not data.get("namespace"):
            wanted["namespace"] = base64.b64encode(namespace.encode()).decode()
        if self.ca_cert is not None and not data.get("ca.crt"):
            wanted["ca.crt"] = base64.b64encode(self.ca_cert).decode()
        if not wanted and annotations.get(SA_UID_ANNOTATION) == uid:
            return
        rt = self.cluster.registry.storage_type(SECRETS)
        assert rt is not None

        def change(obj: Obj) -> None:
            obj.setdefault("data", {}).update(wanted)
            obj["metadata"].setdefault("annotations", {})[SA_UID_ANNOTATION] = uid

        try:
            self.cluster.mutate(rt, namespace, name, change)
        except APIError as exc:
            log.warning("could not fill the token of secret %s/%s: %s", namespace, name, exc)

    # ---- the root CA publisher

    def publish_root_ca(self, namespace: str) -> None:
        assert self.ca_cert is not None
        store = self.cluster.store
        ns = store.get(NAMESPACES, "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        rt = self.cluster.registry.storage_type(CONFIG_MAPS)
        assert rt is not None
        data = {"ca.crt": self.ca_cert.decode()}
        current = store.get(CONFIG_MAPS, namespace, ROOT_CA_CONFIGMAP)
        try:
            if current is None:
                body: dict[str, Any] = {
                    "metadata": {
                        "name": ROOT_CA_CONFIGMAP,
                        "annotations": {
                            "kubernetes.io/description": "Contains a CA bundle that can be used "
                            "to verify the kube-apiserver when using internal endpoints such "
                            "as the internal service IP or kubernetes.default.svc. No other "
                            "usage is guaranteed across distributions of Kubernetes clusters."
                        },
                    },
                    "data": data,
                }
                self.cluster.create(rt, namespace, body, Ctx(system=True))
            elif current.get("data") != data:

                def change(obj: Obj) -> None:
                    obj["data"] = data

                self.cluster.mutate(rt, namespace, ROOT_CA_CONFIGMAP, change)
        except APIError as exc:
            log.warning("could not publish %s in %s: %s", ROOT_CA_CONFIGMAP, namespace, exc)
