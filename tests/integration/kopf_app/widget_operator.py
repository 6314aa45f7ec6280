"""A minimal kopf operator used only by tests: it proves devcluster runs kopf with peering.

On create it records a greeting in the status, on update it records the new size, and on
delete it writes a ConfigMap as evidence (then kopf removes its finalizer).
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "widgets.test.elasticlm.io/finalizer"
    settings.watching.server_timeout = 30
    settings.posting.level = 0


@kopf.on.create("test.elasticlm.io", "v1", "widgets")
def created(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["greeting"] = f"hello {spec.get('name', 'nobody')}"


@kopf.on.update("test.elasticlm.io", "v1", "widgets", field="spec.size")
def resized(new: Any, patch: kopf.Patch, **_: Any) -> None:
    patch.status["observedSize"] = new


@kopf.on.delete("test.elasticlm.io", "v1", "widgets")
def deleted(name: str, namespace: str | None, **_: Any) -> None:
    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    # Any: the client's generated signatures want model objects; plain dicts work.
    core: Any = kubernetes.client.CoreV1Api()
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": f"{name}-deleted"}, "data": {"by": "kopf"}}
    )
