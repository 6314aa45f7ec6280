"""A small CustomResourceDefinition builder for tests that need throwaway kinds."""

from __future__ import annotations

from typing import Any


def simple_crd(
    group: str,
    kind: str,
    plural: str,
    *,
    scope: str = "Namespaced",
    spec_properties: dict[str, Any] | None = None,
    free_form_status: bool = True,
    status_subresource: bool = False,
) -> dict[str, Any]:
    """One served and stored version `v1`, a typed `spec` if given, a free-form `status`."""
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
