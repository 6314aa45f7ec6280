"""`APIServer`: the HTTP face of a Cluster: routing, verbs and subresources, lists,
delete options, errors as Status.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from devcluster import requestmetrics
from devcluster.apiserver import managedfields
from devcluster.apiserver.cluster import Cluster
from devcluster.apiserver.codec import MAX_BODY
from devcluster.apiserver.discovery import DiscoveryHandlers
from devcluster.apiserver.http import (
    Accept,
    Route,
    method_not_allowed,
    not_found_path,
    parse_accept,
    parse_api_path,
    partial_metadata,
    query_bool,
    query_int,
    too_large,
)
from devcluster.apiserver.logs import LogHandlers
from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.apiserver.security import USER_KEY, Security
from devcluster.apiserver.watch import WatchHandlers
from devcluster.gc import Controllers
from devcluster.resources.types import ResourceType
from devcluster.store import APIError, Obj, bad_request, success_status
from devcluster.values import as_dict, as_list

log = logging.getLogger(__name__)


class APIServer(DiscoveryHandlers, WatchHandlers, LogHandlers):
    """The HTTP face of a Cluster; starts and stops the cluster's controllers with the app."""

    def __init__(
        self,
        cluster: Cluster,
        controllers: Controllers,
        security: Security,
        *,
        bookmark_interval: float = 30.0,
        max_watch_seconds: float = 1800.0,
        log_poll_interval: float = 0.2,
    ) -> None:
        self.cluster = cluster
        self.controllers = controllers
        self.security = security
        self.bookmark_interval = bookmark_interval
        self.max_watch_seconds = max_watch_seconds
        self.log_poll_interval = log_poll_interval
        self.stopping: asyncio.Event | None = None  # created on startup
        self._streams: set[asyncio.Event] = set()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except APIError as exc:
            return self.error_response(exc)
        except web.HTTPException as exc:
            if exc.status == 413:
                return self.error_response(too_large())
            if exc.status == 404:
                return self.error_response(not_found_path())
            if exc.status == 405:
                return self.error_response(method_not_allowed())
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            return self.error_response(
                APIError(500, "InternalError", f"Internal error occurred: {exc!r}")
            )

    def make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self.security.middleware, self.middleware],
            client_max_size=MAX_BODY + 1024,
        )
        requestmetrics.install(app)  # GET /metrics; before the catch-all route below
        app.router.add_get("/version", self.get_version)
        app.router.add_get("/version/", self.get_version)
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, self.health)
            app.router.add_get(path + "/{check:.*}", self.health)
        app.router.add_get("/api", self.get_api_versions)
        app.router.add_get("/api/", self.get_api_versions)
        app.router.add_get("/apis", self.get_api_groups)
        app.router.add_get("/apis/", self.get_api_groups)
        app.router.add_get("/openapi/v2", self.get_openapi_v2)
        app.router.add_get("/openapi/v3", self.get_openapi_v3_root)
        app.router.add_get("/openapi/v3/{path:.*}", self.get_openapi_v3)
        app.router.add_route("*", "/{path:.*}", self.dispatch)
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        app.on_cleanup.append(self.on_cleanup)
        return app

    async def on_startup(self, app: web.Application) -> None:
        self.stopping = asyncio.Event()
        self.controllers.start()

    async def on_shutdown(self, app: web.Application) -> None:
        if self.stopping is not None:
            self.stopping.set()
        for event in list(self._streams):
            event.set()
        self.cluster.store.close_watchers()

    async def on_cleanup(self, app: web.Application) -> None:
        await self.controllers.stop()
        self.cluster.store.flush()

    # ---- resources

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        registry = self.cluster.registry
        if len(parts) == 2 and parts[0] == "apis" and request.method == "GET":
            if not registry.versions(parts[1]):
                raise not_found_path()
            group = {"kind": "APIGroup", "apiVersion": "v1", **self.api_group(parts[1])}
            return self.respond(request, group)
        route = parse_api_path(parts)
        if route is None:
            raise not_found_path()
        if route.plural is None:
            if request.method != "GET":
                raise method_not_allowed()
            if not registry.resources(route.group, route.version):
                raise not_found_path()
            return self.respond(request, self.resource_list(route.group, route.version))
        rt = registry.get(route.group, route.version, route.plural)
        if rt is None:
            raise not_found_path()
        if route.namespace is not None and not rt.namespaced:
            raise not_found_path()
        if rt.virtual and (request.method != "POST" or route.name is not None):
            raise method_not_allowed()
        return await self.serve_resource(request, rt, route)

    async def serve_resource(
        self, request: web.Request, rt: ResourceType, route: Route
    ) -> web.StreamResponse:
        q = request.query
        method = request.method
        cluster = self.cluster
        accept = parse_accept(request.headers.get("Accept", ""))
        ctx = Ctx(
            dry_run="All" in q.getall("dryRun", []),
            field_validation=q.get("fieldValidation") or "Warn",
            field_manager=q.get("fieldManager"),
            user_agent_manager=managedfields.manager_from_user_agent(
                request.headers.get("User-Agent", "")
            ),
            force=query_bool(q.get("force")),
        )
        if ctx.field_validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{ctx.field_validation}": supported '
                'values: "Ignore", "Strict", "Warn"'
            )
        for value in q.getall("dryRun", []):
            if value != "All":
                raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        namespace = route.namespace if rt.namespaced else None
        name, sub = route.name, route.subresource

        if name is None:
            watch = route.watch or query_bool(q.get("watch"))
            if method == "GET" and watch:
                return await self.serve_watch(request, rt, namespace, None, accept)
            if method == "GET":
                return self.serve_list(request, rt, namespace, accept)
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise method_not_allowed()
                if "create" not in rt.verbs:
                    raise method_not_allowed()
                if rt.virtual:  # access reviews: answered for the requesting user
                    body = await self.read_object(request)
                    answer = self.security.review(rt, body, request[USER_KEY])
                    return self.respond(request, answer, 201)
                body = await self.read_object(request)
                new_obj = cluster.create(rt, namespace, body, ctx)
                return self.respond_object(request, rt, new_obj, 201, ctx, accept)
            if method == "DELETE":
                if "deletecollection" not in rt.verbs or (rt.namespaced and namespace is None):
                    raise method_not_allowed()
                options = await self.delete_options(request)
                deleted = cluster.delete_collection(
                    rt, namespace, options, q.get("labelSelector"), q.get("fieldSelector")
                )
                result = {
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(cluster.store.resource_version)},
                    "items": deleted,
                }
                return self.respond(request, result, warnings=ctx.warnings)
            raise method_not_allowed()

        if rt.namespaced and namespace is None:
            raise not_found_path()
        if route.watch:
            if method != "GET" or sub is not None:
                raise method_not_allowed()
            return await self.serve_watch(request, rt, namespace, name, accept)

        if sub is None:
            if method == "GET":
                if query_bool(q.get("watch")):
                    return await self.serve_watch(request, rt, namespace, name, accept)
                obj = cluster.get(rt, namespace, name)
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            if method == "PUT":
                body = await self.read_object(request)
                obj, created = cluster.update(rt, namespace, name, body, ctx)
                return self.respond_object(request, rt, obj, 201 if created else 200, ctx, accept)
            if method == "PATCH":
                obj, created = await self.do_patch(request, rt, namespace, name, ctx, None)
                return self.respond_object(request, rt, obj, 201 if created else 200, ctx, accept)
            if method == "DELETE":
                options = await self.delete_options(request)
                obj, removed = cluster.delete(rt, namespace, name, options)
                if removed and not rt.return_deleted:
                    m = obj["metadata"]
                    details = {"name": name, "group": rt.group, "kind": rt.plural, "uid": m["uid"]}
                    return self.respond(request, success_status(details), warnings=ctx.warnings)
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            raise method_not_allowed()

        if sub == "status" and rt.status:
            if method == "GET":
                obj = cluster.get(rt, namespace, name)
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            if method == "PUT":
                body = await self.read_object(request)
                obj, _ = cluster.update(rt, namespace, name, body, ctx, subresource="status")
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            if method == "PATCH":
                obj, _ = await self.do_patch(request, rt, namespace, name, ctx, "status")
                return self.respond_object(request, rt, obj, 200, ctx, accept)
            raise method_not_allowed()
        if sub == "finalize" and rt.gr == ("", "namespaces"):
            if method != "PUT":
                raise method_not_allowed()
            body = await self.read_object(request)
            obj = self.finalize_namespace(rt, name, body, ctx)
            return self.respond_object(request, rt, obj, 200, ctx, accept)
        if sub == "scale" and rt.scale is not None:
            if method == "GET":
                return self.respond(request, cluster.get_scale(rt, namespace, name))
            if method == "PUT":
                body = await self.read_object(request)
                scale = cluster.update_scale(rt, namespace, name, body, ctx)
                return self.respond(request, scale, warnings=ctx.warnings)
            if method == "PATCH":
                raw = await self.read_body(request)
                content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
                scale = cluster.patch_scale(rt, namespace, name, content_type, raw, ctx)
                return self.respond(request, scale, warnings=ctx.warnings)
            raise method_not_allowed()
        if sub == "token" and rt.gr == ("", "serviceaccounts"):
            if method != "POST":
                raise method_not_allowed()
            return await self.serve_token_request(request, rt, namespace or "", name, ctx)
        if sub == "log" and rt.log:
            if method != "GET":
                raise method_not_allowed()
            return await self.serve_log(request, rt, namespace or "", name)
        raise not_found_path()

    async def serve_token_request(
        self, request: web.Request, rt: ResourceType, namespace: str, name: str, ctx: Ctx
    ) -> web.Response:
        body = await self.read_object(request)
        sa = self.cluster.get(rt, namespace, name)
        store = self.cluster.store

        def bound_object(kind: str, obj_name: str) -> Obj | None:
            return store.get(("", "pods" if kind == "Pod" else "secrets"), namespace, obj_name)

        answer = self.security.token_request(sa, body, bound_object)
        return self.respond(request, answer, 201, ctx.warnings)

    def finalize_namespace(self, rt: ResourceType, name: str, body: Any, ctx: Ctx) -> Obj:
        wanted = as_list(as_dict(as_dict(body).get("spec")).get("finalizers"))

        def change(obj: Obj) -> None:
            obj.setdefault("spec", {})["finalizers"] = wanted

        # spec is server-owned on ordinary updates; finalize writes it directly
        stored = self.cluster._stored(rt, "", name)
        obj = copy.deepcopy(stored)
        change(obj)
        if obj == stored:
            return rt.present(stored)
        return rt.present(self.cluster.commit(rt, obj, stored))

    async def do_patch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        ctx: Ctx,
        subresource: str | None,
    ) -> tuple[Obj, bool]:
        raw = await self.read_body(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        return self.cluster.patch(rt, namespace, name, content_type, raw, ctx, subresource)

    async def delete_options(self, request: web.Request) -> DeleteOptions:
        q = request.query
        options = DeleteOptions()
        raw = await self.read_body(request)
        body: Any = {}
        if raw.strip():
            # JSON from kubectl and most clients; protobuf from client-go's typed clients.
            body = self.decode_object(raw, request)
            if not isinstance(body, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        grace = body.get("gracePeriodSeconds")
        if q.get("gracePeriodSeconds") is not None:
            grace = query_int(q.get("gracePeriodSeconds"), "gracePeriodSeconds")
        if grace is not None and not isinstance(grace, int):
            raise bad_request("gracePeriodSeconds must be an integer")
        options.grace_period = grace
        policy = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = body.get("orphanDependents")
        if q.get("orphanDependents") is not None:
            orphan = query_bool(q.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if orphan else "Background"
        options.propagation = policy
        preconditions = as_dict(body.get("preconditions"))
        options.precondition_uid = preconditions.get("uid")
        options.precondition_rv = preconditions.get("resourceVersion")
        dry_run = list(q.getall("dryRun", [])) + list(as_list(body.get("dryRun")))
        options.dry_run = "All" in dry_run
        return options

    def respond_object(
        self,
        request: web.Request,
        rt: ResourceType,
        obj: Obj,
        status: int,
        ctx: Ctx,
        accept: Accept,
    ) -> web.Response:
        from devcluster import tables

        if accept.table is not None:
            include = request.query.get("includeObject", "Metadata")
            table = tables.to_table(rt, [obj], {}, include, accept.table)
            return self.respond(request, table, status, ctx.warnings)
        if accept.partial is not None:
            return self.respond(
                request, partial_metadata(obj, accept.partial), status, ctx.warnings
            )
        return self.respond(request, obj, status, ctx.warnings, accept)

    def serve_list(
        self, request: web.Request, rt: ResourceType, namespace: str | None, accept: Accept
    ) -> web.Response:
        from devcluster import tables

        q = request.query
        limit = query_int(q.get("limit"), "limit")
        items, list_meta = self.cluster.list_objects(
            rt,
            namespace,
            label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"),
            limit=limit if limit and limit > 0 else None,
            continue_token=q.get("continue"),
        )
        if accept.table is not None:
            include = q.get("includeObject", "Metadata")
            return self.respond(
                request, tables.to_table(rt, items, list_meta, include, accept.table)
            )
        if accept.partial is not None:
            return self.respond(
                request,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": accept.partial,
                    "metadata": list_meta,
                    "items": [partial_metadata(i, accept.partial) for i in items],
                },
            )
        result = {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": list_meta,
            "items": items,
        }
        return self.respond(request, result, accept=accept)
