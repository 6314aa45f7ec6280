"""Who a request is: `UserInfo`, the identities devcluster knows, and the group names
Kubernetes gives them (k8s.io/apiserver/pkg/authentication/user and serviceaccount).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SYSTEM_MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS_NAME = "system:anonymous"
SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
#: What the kubeconfig's user is called, as kubeadm and kind call it.
ADMIN_NAME = "kubernetes-admin"
#: Requests without credentials in the default (loopback, trusted) mode: the identity
#: kube-apiserver's former localhost insecure port gave every request.
UNSECURED_NAME = "system:unsecured"

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
CREDENTIAL_ID_EXTRA = "authentication.kubernetes.io/credential-id"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity: name, uid, groups and extra values."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)

    def as_json(self) -> dict[str, object]:
        """As `authentication.k8s.io/v1` UserInfo (audit events, self subject reviews)."""
        result: dict[str, object] = {"username": self.name}
        if self.uid:
            result["uid"] = self.uid
        if self.groups:
            result["groups"] = list(self.groups)
        if self.extra:
            result["extra"] = {k: list(v) for k, v in self.extra.items()}
        return result


ADMIN = UserInfo(ADMIN_NAME, groups=(SYSTEM_MASTERS, AUTHENTICATED))
UNSECURED = UserInfo(UNSECURED_NAME, groups=(SYSTEM_MASTERS, AUTHENTICATED))
ANONYMOUS = UserInfo(ANONYMOUS_NAME, groups=(UNAUTHENTICATED,))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def split_service_account_username(username: str) -> tuple[str, str] | None:
    """(namespace, name) of `system:serviceaccount:NS:NAME`, else None."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def service_account_user(
    namespace: str, name: str, uid: str, extra: dict[str, list[str]] | None = None
) -> UserInfo:
    """A service account's identity, with the groups Kubernetes gives it."""
    return UserInfo(
        service_account_username(namespace, name),
        uid,
        (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}", AUTHENTICATED),
        dict(extra or {}),
    )
