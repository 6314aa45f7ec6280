"""Discovery: /version, health checks, API groups and resource lists, OpenAPI."""

from __future__ import annotations

import platform
import re

from aiohttp import web

from devcluster.apiserver.http import Handlers, not_found_path
from devcluster.store import Obj


def version_info(git_version: str) -> Obj:
    match = re.match(r"v?(\d+)\.(\d+)", git_version)
    major, minor = (match.group(1), match.group(2)) if match else ("1", "33")
    machine = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "devcluster",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": f"linux/{arch}",
    }


class DiscoveryHandlers(Handlers):
    """/version, /healthz, /api, /apis and /openapi."""

    async def get_version(self, request: web.Request) -> web.Response:
        return self.respond(request, version_info(self.cluster.kubernetes_version))

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def get_api_versions(self, request: web.Request) -> web.Response:
        host = request.host or "127.0.0.1"
        return self.respond(
            request,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            },
        )

    def api_group(self, group: str) -> Obj:
        versions = self.cluster.registry.versions(group)
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    async def get_api_groups(self, request: web.Request) -> web.Response:
        groups = [self.api_group(g) for g in self.cluster.registry.groups() if g]
        return self.respond(request, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in self.cluster.registry.resources(group, version):
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            sub = {"singularName": "", "namespaced": rt.namespaced, "kind": rt.kind}
            if rt.status:
                resources.append(
                    {"name": f"{rt.plural}/status", **sub, "verbs": ["get", "patch", "update"]}
                )
            if rt.scale is not None:
                resources.append(
                    {
                        "name": f"{rt.plural}/scale",
                        **sub,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if rt.log:
                resources.append({"name": f"{rt.plural}/log", **sub, "verbs": ["get"]})
            if rt.gr == ("", "serviceaccounts"):
                resources.append(
                    {
                        "name": "serviceaccounts/token",
                        **sub,
                        "group": "authentication.k8s.io",
                        "version": "v1",
                        "kind": "TokenRequest",
                        "verbs": ["create"],
                    }
                )
            if rt.gr == ("", "namespaces"):
                resources.append({"name": "namespaces/finalize", **sub, "verbs": ["update"]})
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    # ---- OpenAPI

    async def get_openapi_v2(self, request: web.Request) -> web.Response:
        from devcluster import openapi

        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and "json" not in accept.split("protobuf")[0]:
            return web.Response(
                body=openapi.v2_protobuf(self.cluster.registry, self.cluster.kubernetes_version),
                content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )
        return self.respond(
            request, openapi.v2_document(self.cluster.registry, self.cluster.kubernetes_version)
        )

    async def get_openapi_v3_root(self, request: web.Request) -> web.Response:
        from devcluster import openapi

        return self.respond(
            request, openapi.v3_root(self.cluster.registry, self.cluster.kubernetes_version)
        )

    async def get_openapi_v3(self, request: web.Request) -> web.Response:
        from devcluster import openapi

        document = openapi.v3_document(
            self.cluster.registry, request.match_info["path"], self.cluster.kubernetes_version
        )
        if document is None:
            raise not_found_path()
        return self.respond(request, document)
