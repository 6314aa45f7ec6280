"""CustomResourceDefinitions for tests: this project's, throwaway ones, and installing them.

Every test that needs CRDs in a cluster installs them with `install_crds`, which returns
only once each one is Established and its resource is served in discovery.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import kubernetes
import yaml

from lmoperator.api.crd import RESOURCE_KINDS, render_crds
from tests.kubeclient import custom_api, extensions_api
from tests.waiting import wait_for

CRD = dict[str, Any]

#: How long a cluster gets to establish and serve a CRD.
ESTABLISH_TIMEOUT = 30.0


def project_crds() -> list[CRD]:
    """This project's CRDs exactly as committed in crds/ (rendered, through YAML); fresh copies."""
    texts = render_crds()
    return [copy.deepcopy(yaml.safe_load(texts[r.filename])) for r in RESOURCE_KINDS]


def simple_crd(
    group: str,
    kind: str,
    plural: str,
    *,
    scope: str = "Namespaced",
    spec_properties: dict[str, Any] | None = None,
    free_form_status: bool = True,
    status_subresource: bool = False,
) -> CRD:
    """A throwaway kind: one served and stored version `v1`, a typed `spec` if given, a
    free-form `status`."""
    properties: dict[str, Any] = {}
    if spec_properties is not None:
        properties["spec"] = {"type": "object", "properties": spec_properties}
    if free_form_status:
        properties["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    version: dict[str, Any] = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": properties}},
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [version],
        },
    }


def kopf_peering_crds() -> list[CRD]:
    """kopf's peering CRDs (cluster-scoped and namespaced), as its documentation gives them."""
    return [
        simple_crd("kopf.dev", "ClusterKopfPeering", "clusterkopfpeerings", scope="Cluster"),
        simple_crd("kopf.dev", "KopfPeering", "kopfpeerings"),
    ]


def install_crds(
    api: kubernetes.client.ApiClient, crds: Iterable[CRD], timeout: float = ESTABLISH_TIMEOUT
) -> list[str]:
    """Create each CRD (or replace it where it exists, as on a rerun against a real
    cluster), then wait until every one is Established and each served version lists its
    resource in discovery. Returns the CRDs' names.
    """
    extensions = extensions_api(api)
    custom = custom_api(api)
    installed = [copy.deepcopy(crd) for crd in crds]
    for crd in installed:
        name = crd["metadata"]["name"]
        try:
            extensions.create_custom_resource_definition(crd)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            current = extensions.read_custom_resource_definition(name)
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            extensions.replace_custom_resource_definition(name, crd)

    for crd in installed:
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            got = extensions.read_custom_resource_definition(name)
            conditions = got.status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, timeout, what=f"CRD {name} to be Established")
        spec = crd["spec"]
        plural = spec["names"]["plural"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue

            def served(
                group: str = spec["group"], version: str = version["name"], plural: str = plural
            ) -> bool:
                resources = custom.get_api_resources(group, version).resources
                return any(r.name == plural for r in resources)

            wait_for(
                served,
                timeout,
                what=f"{plural}.{spec['group']}/{version['name']} in discovery",
                retry_on=(kubernetes.client.ApiException,),
            )
    return [crd["metadata"]["name"] for crd in installed]
