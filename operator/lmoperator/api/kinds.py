"""The resource registry: who every kind the operator reads or writes is.

One place spells each group, version, kind, plural and short name. The API models, CRD
generation, `kube.py`, the handlers and the tests read them from here; nothing else
spells a plural. Adding a kind of ours means one `ResourceKind` line here (plus its
models and handlers; see docs/architecture.md, "Adding a kind").
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "elasticlm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class ResourceKind:
    """The identity of a Kubernetes resource type (what a REST path is made of)."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        """`lmtrainingjobs.elasticlm.io`: the name of the CRD defining a custom kind."""
        return f"{self.plural}.{self.group}"

    @property
    def short_name(self) -> str:
        """The name `kubectl explain` and error messages use ("lmtj")."""
        return self.short_names[0] if self.short_names else self.plural

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection, or of one object when `name` is given."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            root += f"/namespaces/{namespace}"
        root += f"/{self.plural}"
        return f"{root}/{name}" if name is not None else root


# Our own kinds (custom resources).
TRAINING_JOB = ResourceKind(GROUP, VERSION, "LMTrainingJob", "lmtrainingjobs", ("lmtj",))
SERVICE = ResourceKind(GROUP, VERSION, "LMService", "lmservices", ("lms",))
TUNING_JOB = ResourceKind(GROUP, VERSION, "LMTuningJob", "lmtuningjobs", ("lmtune",))
CUSTOM_KINDS: tuple[ResourceKind, ...] = (TRAINING_JOB, SERVICE, TUNING_JOB)

# Kubernetes kinds the operator creates as children.
POD = ResourceKind("", "v1", "Pod", "pods", ("po",))
K8S_SERVICE = ResourceKind("", "v1", "Service", "services", ("svc",))
SECRET = ResourceKind("", "v1", "Secret", "secrets")
EVENT = ResourceKind("", "v1", "Event", "events", ("ev",))
DEPLOYMENT = ResourceKind("apps", "v1", "Deployment", "deployments", ("deploy",))
NETWORK_POLICY = ResourceKind(
    "networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", ("netpol",)
)
POD_DISRUPTION_BUDGET = ResourceKind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")
# An autoscaled object's metric history (autoscale/history.py), owned by the object.
CONFIG_MAP = ResourceKind("", "v1", "ConfigMap", "configmaps", ("cm",))
# The operator's own leader-election lock (not a child of anything).
LEASE = ResourceKind("coordination.k8s.io", "v1", "Lease", "leases")
CHILD_KINDS: tuple[ResourceKind, ...] = (
    POD,
    K8S_SERVICE,
    SECRET,
    DEPLOYMENT,
    NETWORK_POLICY,
    POD_DISRUPTION_BUDGET,
    *CUSTOM_KINDS,
)

_BY_API_VERSION_KIND = {(k.api_version, k.kind): k for k in (*CHILD_KINDS, EVENT, LEASE)}


def custom_kind(kind: str) -> ResourceKind:
    """One of our kinds by its name ("LMTrainingJob"); KeyError when it is not ours."""
    for item in CUSTOM_KINDS:
        if item.kind == kind:
            return item
    raise KeyError(kind)


def kind_of(api_version: str, kind: str) -> ResourceKind | None:
    """The registered kind of an object (its apiVersion and kind), or None."""
    return _BY_API_VERSION_KIND.get((api_version, kind))
