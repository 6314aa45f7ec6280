"""Service-account tokens: JSON Web Tokens that devcluster signs and verifies.

Kubernetes signs service-account tokens with RS256 and a key pair; devcluster signs
them with HS256 (HMAC-SHA256) and a random 32-byte key kept in the state directory, so
that tokens outlive a restart of a persistent cluster. Only devcluster can verify them,
which is all it needs: it is the only API server that reads them.

The claims are those of Kubernetes (pkg/serviceaccount/claims.go):

- bound tokens (TokenRequest, what the kubelet puts in pods): `iss`, `sub`
  (`system:serviceaccount:NS:NAME`), `aud`, `exp`, `iat`, `nbf`, `jti` and a private
  `kubernetes.io` claim naming the namespace, the service account (name, uid) and the
  object the token is bound to (a pod or a secret: name, uid);
- legacy tokens (Secrets of type kubernetes.io/service-account-token): issuer
  `kubernetes/serviceaccount` and the `kubernetes.io/serviceaccount/...` claims, no
  expiry.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

#: The issuer and default audience of bound tokens (kube-apiserver's
#: --service-account-issuer on kubeadm and kind clusters).
ISSUER = "https://kubernetes.default.svc.cluster.local"
LEGACY_ISSUER = "kubernetes/serviceaccount"
#: How long the kubelet's projected tokens last when the pod does not say:
#: the ServiceAccount admission plugin's 3607 s.
DEFAULT_EXPIRATION_SECONDS = 3607
#: TokenRequest's floor (10 minutes), as in Kubernetes' validation.
MIN_EXPIRATION_SECONDS = 600
KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies HS256 JWTs with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must have at least 16 bytes")
        self._key = key
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path | None) -> TokenSigner:
        """The key in `path` (created, mode 0600, when missing); a fresh key without one."""
        if path is None:
            return cls(secrets.token_bytes(KEY_BYTES))
        with contextlib.suppress(FileNotFoundError):
            return cls(path.read_bytes())
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "HS256", "kid": self.key_id, "typ": "JWT"}
        head = _b64(json.dumps(header, separators=(",", ":")).encode())
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signature = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(signature)}"

    def verify(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        """The claims of a token this signer made that is valid at `now`, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        head, body, signature = parts
        expected = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(signature), expected):
                return None
            header = json.loads(_unb64(head))
            claims = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            return None
        if not isinstance(claims, dict):
            return None
        moment = time.time() if now is None else now
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, int | float) and moment >= exp:
            return None
        if isinstance(nbf, int | float) and moment + 60 < nbf:  # Kubernetes' 60 s leeway
            return None
        return claims


def bound_claims(
    *,
    namespace: str,
    service_account: tuple[str, str],
    audiences: list[str],
    expiration_seconds: int,
    bound: tuple[str, str, str] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a TokenRequest token. `service_account` is (name, uid); `bound`
    is (kind, name, uid) of the pod or secret the token dies with."""
    issued = int(time.time() if now is None else now)
    private: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {"name": service_account[0], "uid": service_account[1]},
    }
    if bound is not None:
        kind, name, uid = bound
        private[kind.lower()] = {"name": name, "uid": uid}
    return {
        "iss": ISSUER,
        "sub": f"system:serviceaccount:{namespace}:{service_account[0]}",
        "aud": audiences,
        "exp": issued + expiration_seconds,
        "iat": issued,
        "nbf": issued,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": private,
    }


def legacy_claims(
    namespace: str, service_account: tuple[str, str], secret_name: str
) -> dict[str, Any]:
    """The claims of a token in a kubernetes.io/service-account-token Secret."""
    return {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret_name,
        "kubernetes.io/serviceaccount/service-account.name": service_account[0],
        "kubernetes.io/serviceaccount/service-account.uid": service_account[1],
        "sub": f"system:serviceaccount:{namespace}:{service_account[0]}",
    }
