"""Bearer-token authentication from a token file (a mounted Secret key).

The file is read again whenever it changes, so a rotated Secret takes effect without a
restart (the kubelet swaps a mounted Secret's files in place). Tokens are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

log = logging.getLogger("lmworker.serve.auth")


class TokenFileError(ValueError):
    """The token file is missing or empty at start-up."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BearerAuth:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._token = b""
        try:
            self._reload()
        except OSError as exc:
            raise TokenFileError(f"--auth-token-file {self.path}: {exc.strerror}") from exc
        if not self._token:
            raise TokenFileError(f"--auth-token-file {self.path} is empty: put the token in it")

    def allows(self, authorization: str | None) -> bool:
        """Whether the request's Authorization header carries the token."""
        self._refresh()
        token = bearer_token(authorization)
        return token is not None and hmac.compare_digest(token.encode(), self._token)

    def _refresh(self) -> None:
        try:
            self._reload()
        except OSError as exc:  # mid-rotation or removed: keep the token we have
            log.warning(
                "Token file unreadable, kept the previous token path=%s error=%s",
                self.path,
                exc.strerror,
            )

    def _reload(self) -> None:
        stat = os.stat(self.path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        token = self.path.read_bytes().strip()
        if token:
            self._token = token
        self._stamp = stamp
