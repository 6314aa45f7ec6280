"""The cluster's own certificate authority and the API server's serving certificate,
made with the `openssl` command line tool (Python's standard library cannot create
certificates, and devcluster adds no dependency for it).

`ensure_pki(directory)` returns the CA certificate and the server's certificate and key
files, creating them on first use (EC P-256, valid for ten years; the server
certificate names 127.0.0.1, localhost and the `kubernetes.default.svc` names that
in-cluster clients use). Without `openssl` on PATH it returns None and devcluster serves
plain HTTP only.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_NAMES = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
)
DAYS = "3650"


@dataclass(frozen=True)
class Pki:
    ca_cert: bytes  # PEM
    ca_file: Path
    cert_file: Path
    key_file: Path


def _run(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=60)


def ensure_pki(directory: Path) -> Pki | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        log.warning("openssl is not on PATH: devcluster serves plain HTTP only")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, crt = directory / "apiserver.key", directory / "apiserver.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    try:
        if not (ca_key.exists() and ca_crt.exists()):
            _run(
                [openssl, "req", "-x509", *ec, "-keyout", ca_key.name, "-out", ca_crt.name,
                 "-days", DAYS, "-subj", "/CN=devcluster-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                directory,
            )  # fmt: skip
            crt.unlink(missing_ok=True)
        if not (key.exists() and crt.exists()):
            extensions = directory / "apiserver.ext"
            extensions.write_text(
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
                f"subjectAltName={','.join(SERVER_NAMES)}\n"
            )
            _run(
                [openssl, "req", *ec, "-keyout", key.name, "-out", "apiserver.csr",
                 "-subj", "/CN=kube-apiserver"],
                directory,
            )  # fmt: skip
            _run(
                [openssl, "x509", "-req", "-in", "apiserver.csr", "-CA", ca_crt.name,
                 "-CAkey", ca_key.name, "-CAcreateserial", "-out", crt.name, "-days", DAYS,
                 "-extfile", extensions.name],
                directory,
            )  # fmt: skip
        for private in (ca_key, key):
            private.chmod(0o600)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = str(exc)
        if isinstance(exc, subprocess.CalledProcessError):
            detail = exc.stderr.decode(errors="replace").strip()
        log.warning("could not create the cluster CA with openssl (%s): plain HTTP only", detail)
        return None
    return Pki(ca_crt.read_bytes(), ca_crt, crt, key)
