"""The official kubernetes client's API classes, as tests hold them.

The client's generated methods are typed for its model classes, and every field of its
models is optional. Tests pass plain dicts (the client sends them as they are), read
fields the API server always sets, and compare with what they expect, so they hold these
APIs untyped, as lmoperator.localstack does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

import kubernetes

#: kubernetes.client.CoreV1Api
CoreApi: TypeAlias = Any
#: kubernetes.client.CustomObjectsApi
CustomApi: TypeAlias = Any
#: kubernetes.client.ApiextensionsV1Api
ExtensionsApi: TypeAlias = Any
#: kubernetes.client.AppsV1Api
AppsApi: TypeAlias = Any


def core_api(api: kubernetes.client.ApiClient) -> CoreApi:
    return kubernetes.client.CoreV1Api(api)


def custom_api(api: kubernetes.client.ApiClient) -> CustomApi:
    return kubernetes.client.CustomObjectsApi(api)


def extensions_api(api: kubernetes.client.ApiClient) -> ExtensionsApi:
    return kubernetes.client.ApiextensionsV1Api(api)


def apps_api(api: kubernetes.client.ApiClient) -> AppsApi:
    return kubernetes.client.AppsV1Api(api)


def api_client(kubeconfig: Path | str) -> kubernetes.client.ApiClient:
    """A client for the cluster of a kubeconfig file (close it, or use it in `with`)."""
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return client
