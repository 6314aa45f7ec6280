"""What Kubernetes' ServiceAccount admission plugin does to a new pod
(plugin/pkg/admission/serviceaccount/admission.go):

- the pod's service account (`spec.serviceAccountName`, `default` when unset) must
  exist, else the pod is refused with 403 `error looking up service account NS/NAME:
  serviceaccount "NAME" not found`;
- unless `automountServiceAccountToken: false` (on the pod, or on the account when the
  pod does not say), the pod gets a projected volume `kube-api-access-<5 chars>` with
  the account's token (`serviceAccountToken`, 3607 s), the cluster CA (`ca.crt` from the
  ConfigMap `kube-root-ca.crt`) and the namespace (downward API), mounted read-only at
  /var/run/secrets/kubernetes.io/serviceaccount in every container that has no mount
  there yet.

devcluster adds the `ca.crt` source only when it serves HTTPS with its own CA (and so
publishes `kube-root-ca.crt`); without one, the volume has the token and the namespace.
"""

from __future__ import annotations

import secrets

from devcluster.resources.types import Env
from devcluster.store import APIError, Obj
from devcluster.values import as_dict, as_list

TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
TOKEN_EXPIRATION_SECONDS = 3607


def api_access_volume(name: str, with_ca: bool) -> Obj:
    sources: list[Obj] = [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}}
    ]
    if with_ca:
        sources.append(
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            }
        )
    sources.append(
        {
            "downwardAPI": {
                "items": [
                    {
                        "path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                    }
                ]
            }
        }
    )
    return {"name": name, "projected": {"sources": sources, "defaultMode": 0o644}}


def admit_pod(env: Env, obj: Obj) -> None:
    """Check the pod's service account and mount its token (see the module docstring)."""
    spec = as_dict(obj.get("spec"))
    meta = as_dict(obj.get("metadata"))
    namespace = str(meta.get("namespace") or "")
    account = str(spec.get("serviceAccountName") or "default")
    sa = env.store.get(("", "serviceaccounts"), namespace, account)
    if sa is None:
        name = str(meta.get("name") or "")
        raise APIError(
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: error looking up service account '
            f'{namespace}/{account}: serviceaccount "{account}" not found',
            {"name": name, "kind": "pods"},
        )
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = sa.get("automountServiceAccountToken")
    if automount is False:
        return
    containers = [
        as_dict(c)
        for key in ("initContainers", "containers")
        for c in as_list(spec.get(key))
        if isinstance(c, dict)
    ]
    needing = [
        c
        for c in containers
        if not any(
            as_dict(m).get("mountPath") == TOKEN_MOUNT_PATH for m in as_list(c.get("volumeMounts"))
        )
    ]
    if not needing:
        return
    existing = {str(as_dict(v).get("name")) for v in as_list(spec.get("volumes"))}
    while True:
        volume_name = VOLUME_PREFIX + "".join(secrets.choice(NAME_CHARS) for _ in range(5))
        if volume_name not in existing:
            break
    spec.setdefault("volumes", []).append(api_access_volume(volume_name, env.root_ca))
    for c in needing:
        c.setdefault("volumeMounts", []).append(
            {"name": volume_name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}
        )
