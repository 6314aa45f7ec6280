"""Authentication: who a request's `Authorization` header says it is.

- `Bearer <admin token>`: the kubeconfig's user, `kubernetes-admin` in `system:masters`.
- `Bearer <service-account token>`: a token this cluster signed (see `tokens`), still
  valid, whose service account (and, for a bound token, pod or secret) still exists
  with the uid it names, and whose audiences include the API server's: the user
  `system:serviceaccount:NS:NAME` in the groups `system:serviceaccounts`,
  `system:serviceaccounts:NS` and `system:authenticated`, as Kubernetes'
  service-account authenticator makes it.
- No `Authorization` header: when `anonymous` is "admin" (the default: devcluster
  listens on loopback only, and every existing client of it sends no credentials) the
  unrestricted `system:unsecured` user of kube-apiserver's former localhost port; when
  "anonymous", `system:anonymous` in `system:unauthenticated`, authorized by RBAC as
  kube-apiserver's --anonymous-auth does.

Any other header (an unknown, expired, forged or revoked token, another scheme) is
`None`: the request gets 401 Unauthorized, as from kube-apiserver.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from devcluster.auth import tokens, users
from devcluster.store import Obj, Store

SERVICE_ACCOUNTS = ("", "serviceaccounts")
PODS = ("", "pods")
SECRETS = ("", "secrets")
SA_TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
ANONYMOUS_MODES = ("admin", "anonymous")


class Authenticator:
    def __init__(
        self,
        store: Store,
        signer: tokens.TokenSigner,
        admin_token: str,
        *,
        anonymous: str = "admin",
        audiences: tuple[str, ...] = (tokens.ISSUER,),
    ) -> None:
        if anonymous not in ANONYMOUS_MODES:
            raise ValueError(f"anonymous must be one of {ANONYMOUS_MODES}, not {anonymous!r}")
        self.store = store
        self.signer = signer
        self.admin_token = admin_token
        self.anonymous = anonymous
        self.audiences = audiences

    def authenticate(self, authorization: str | None) -> users.UserInfo | None:
        if not authorization:
            return users.UNSECURED if self.anonymous == "admin" else users.ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return users.ADMIN
        claims = self.signer.verify(token)
        if claims is None:
            return None
        if claims.get("iss") == tokens.LEGACY_ISSUER:
            return self._legacy_user(claims, token)
        return self._bound_user(claims)

    def _service_account(self, namespace: Any, name: Any, uid: Any) -> Obj | None:
        if not isinstance(namespace, str) or not isinstance(name, str):
            return None
        sa = self.store.get(SERVICE_ACCOUNTS, namespace, name)
        if sa is None or sa["metadata"].get("deletionTimestamp"):
            return None
        if sa["metadata"].get("uid") != uid:
            return None  # deleted and recreated: the old tokens die with the old account
        return sa

    def _bound_user(self, claims: dict[str, Any]) -> users.UserInfo | None:
        audiences = claims.get("aud")
        if isinstance(audiences, str):
            audiences = [audiences]
        if claims.get("iss") != tokens.ISSUER or not isinstance(audiences, list):
            return None
        if not set(audiences) & set(self.audiences):
            return None
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            return None
        namespace = private.get("namespace")
        account = private.get("serviceaccount") or {}
        if not isinstance(account, dict):
            return None
        sa = self._service_account(namespace, account.get("name"), account.get("uid"))
        if sa is None:
            return None
        extra: dict[str, list[str]] = {}
        pod = private.get("pod")
        if isinstance(pod, dict):
            live = self.store.get(PODS, str(namespace), str(pod.get("name")))
            if live is None or live["metadata"].get("uid") != pod.get("uid"):
                return None  # the pod it was bound to is gone
            extra[users.POD_NAME_EXTRA] = [str(pod.get("name"))]
            extra[users.POD_UID_EXTRA] = [str(pod.get("uid"))]
        secret = private.get("secret")
        if isinstance(secret, dict):
            live = self.store.get(SECRETS, str(namespace), str(secret.get("name")))
            if live is None or live["metadata"].get("uid") != secret.get("uid"):
                return None
        if claims.get("jti"):
            extra[users.CREDENTIAL_ID_EXTRA] = [f"JTI={claims['jti']}"]
        return users.service_account_user(
            str(namespace), str(account.get("name")), str(sa["metadata"]["uid"]), extra
        )

    def _legacy_user(self, claims: dict[str, Any], token: str) -> users.UserInfo | None:
        namespace = claims.get("kubernetes.io/serviceaccount/namespace")
        name = claims.get("kubernetes.io/serviceaccount/service-account.name")
        uid = claims.get("kubernetes.io/serviceaccount/service-account.uid")
        secret_name = claims.get("kubernetes.io/serviceaccount/secret.name")
        sa = self._service_account(namespace, name, uid)
        if sa is None or not isinstance(secret_name, str):
            return None
        secret = self.store.get(SECRETS, str(namespace), secret_name)
        if secret is None or secret.get("type") != SA_TOKEN_SECRET_TYPE:
            return None
        try:
            stored = base64.b64decode(str((secret.get("data") or {}).get("token", "")))
        except (ValueError, binascii.Error):
            return None
        if not hmac.compare_digest(stored, token.encode()):
            return None  # the secret's token was replaced: this one is revoked
        return users.service_account_user(str(namespace), str(name), str(uid))
