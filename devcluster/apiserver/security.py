"""Authentication, authorization and audit of every request, and the API objects that
answer questions about them: TokenRequest (`serviceaccounts/token`),
SelfSubjectAccessReview, SelfSubjectRulesReview and SelfSubjectReview.

`Security.middleware` runs before any handler, as kube-apiserver's filter chain does:
authentication (`devcluster.auth.authn`; a failure is 401 with the Status body of
apimachinery's `NewUnauthorized("Unauthorized")`), then authorization
(`devcluster.auth.rbac`; a denial is the 403 of kube-apiserver's
`responsewriters.Forbidden`), then the handler; the audit log, when enabled, gets one
event per request once it is answered (`devcluster.auth.audit`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devcluster.apiserver.codec import JSON_TYPE, dumps, parse_json
from devcluster.auth import tokens
from devcluster.auth.audit import AuditLog, audit_event
from devcluster.auth.authn import Authenticator
from devcluster.auth.rbac import RBACAuthorizer, forbidden
from devcluster.auth.requestinfo import Attributes, request_attributes
from devcluster.auth.users import (
    ANONYMOUS_NAME,
    AUTHENTICATED,
    SERVICE_ACCOUNTS,
    UNAUTHENTICATED,
    UserInfo,
    split_service_account_username,
)
from devcluster.resources.fields import Cause, invalid, required
from devcluster.resources.types import ResourceType
from devcluster.store import APIError, Obj, Store, bad_request, rfc3339
from devcluster.values import as_dict, as_list

USER_KEY = web.RequestKey("devcluster.user", UserInfo)


def unauthorized() -> APIError:
    """apimachinery's errors.NewUnauthorized("Unauthorized"), as the authentication
    filter answers a request whose credentials are not valid."""
    return APIError(401, "Unauthorized", "Unauthorized")


class Security:
    def __init__(
        self,
        store: Store,
        signer: tokens.TokenSigner,
        admin_token: str,
        *,
        anonymous: str = "admin",
        audit_log: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.admin_token = admin_token
        self.authenticator = Authenticator(store, signer, admin_token, anonymous=anonymous)
        self.authorizer = RBACAuthorizer(store)
        self.audit_log = audit_log

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        received = datetime.now(UTC)
        requester = self.authenticator.authenticate(request.headers.get("Authorization"))
        user = requester
        attrs: Attributes | None = None
        decision, reason = "", ""
        response: web.StreamResponse | None = None
        try:
            if requester is None:
                response = _error(unauthorized())
                return response
            try:
                user = self.impersonate(request, requester)
            except APIError as exc:
                response = _error(exc)
                return response
            attrs = request_attributes(user, request.method, request.path, request.query)
            verdict = self.authorizer.authorize(attrs)
            decision, reason = ("allow" if verdict.allowed else "forbid"), verdict.reason
            if not verdict.allowed:
                response = _error(forbidden(attrs, verdict.reason))
                return response
            request[USER_KEY] = user
            response = await handler(request)
            return response
        finally:
            if self.audit_log is not None:
                impersonated = user if user is not requester else None
                self._audit(
                    request, requester, impersonated, attrs, response, received, decision, reason
                )

    def impersonate(self, request: web.Request, user: UserInfo) -> UserInfo:
        """The user named by `Impersonate-User` / `Impersonate-Group` headers, when the
        requester may impersonate them (the `impersonate` verb on users, groups or
        serviceaccounts), as kube-apiserver's impersonation filter decides."""
        name = request.headers.get("Impersonate-User", "")
        groups = [g for g in request.headers.getall("Impersonate-Group", []) if g]
        if not name:
            if groups:
                raise bad_request(f"requested groups {groups} without impersonating a user")
            return user
        targets: list[Attributes] = []
        account = split_service_account_username(name)
        if account is not None:
            targets.append(
                Attributes(user, "impersonate", "", True, "", "", "serviceaccounts", "", *account)
            )
            if not groups:
                groups = [SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{account[0]}"]
        else:
            targets.append(Attributes(user, "impersonate", "", True, "", "", "users", "", "", name))
        for group in request.headers.getall("Impersonate-Group", []):
            targets.append(
                Attributes(user, "impersonate", "", True, "", "", "groups", "", "", group)
            )
        for target in targets:
            verdict = self.authorizer.authorize(target)
            if not verdict.allowed:
                raise forbidden(target, verdict.reason)
        if name == ANONYMOUS_NAME:
            if UNAUTHENTICATED not in groups:
                groups.append(UNAUTHENTICATED)
        elif AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
        return UserInfo(name, "", tuple(groups))

    def _audit(
        self,
        request: web.Request,
        user: UserInfo | None,
        impersonated: UserInfo | None,
        attrs: Attributes | None,
        response: web.StreamResponse | None,
        received: datetime,
        decision: str,
        reason: str,
    ) -> None:
        assert self.audit_log is not None
        code = response.status if response is not None else 0
        status: dict[str, Any] | None = None
        if isinstance(response, web.Response) and code >= 400 and response.body:
            try:
                body = response.body
                parsed = parse_json(body if isinstance(body, bytes) else b"")
                status = parsed if isinstance(parsed, dict) else None
            except APIError:
                status = None
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.audit_log.write(
            audit_event(
                audit_id=str(uuid.uuid4()),
                request_uri=request.path_qs,
                attrs=attrs,
                user=user,
                impersonated=impersonated,
                source_ip=str(peer[0]) if peer else "",
                user_agent=request.headers.get("User-Agent", ""),
                code=code,
                status=status,
                received=received,
                completed=datetime.now(UTC),
                decision=decision,
                reason=reason,
                method=request.method,
            )
        )

    # ---- reviews

    def review(self, rt: ResourceType, body: Any, user: UserInfo) -> Obj:
        """The answer to a SelfSubjectAccessReview, SelfSubjectRulesReview or
        SelfSubjectReview from `user`."""
        if not isinstance(body, dict):
            raise bad_request(f"{rt.kind} must be a JSON object")
        result: Obj = {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {**as_dict(body.get("metadata")), "creationTimestamp": None},
        }
        spec = as_dict(body.get("spec"))
        if rt.plural == "selfsubjectreviews":
            result["status"] = {"userInfo": user.as_json()}
            return result
        result["spec"] = spec
        if rt.plural == "selfsubjectrulesreviews":
            namespace = str(spec.get("namespace") or "")
            resource_rules, non_resource_rules, error = self.authorizer.rules_for(user, namespace)
            status: Obj = {
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": False,
            }
            if error:
                status["evaluationError"] = error
            result["status"] = status
            return result
        attrs = access_review_attributes(rt, spec, user)
        verdict = self.authorizer.authorize(attrs)
        answer: Obj = {"allowed": verdict.allowed}
        if verdict.reason:
            answer["reason"] = verdict.reason
        result["status"] = answer
        return result

    # ---- TokenRequest

    def token_request(
        self, sa: Obj, body: Any, bound_object: Callable[[str, str], Obj | None]
    ) -> Obj:
        """Issue a token for service account `sa` (serviceaccounts/token).

        `bound_object(kind, name)` looks up the pod or secret the token is bound to in
        the account's namespace.
        """
        if not isinstance(body, dict):
            raise bad_request("TokenRequest must be a JSON object")
        spec = as_dict(body.get("spec"))
        name = str(sa["metadata"]["name"])
        namespace = str(sa["metadata"]["namespace"])
        causes: list[Cause] = []
        expiration = spec.get("expirationSeconds", 3600)
        if not isinstance(expiration, int) or isinstance(expiration, bool):
            causes.append(invalid("spec.expirationSeconds", expiration, "must be an integer"))
            expiration = 3600
        elif expiration < tokens.MIN_EXPIRATION_SECONDS:
            causes.append(
                invalid(
                    "spec.expirationSeconds",
                    expiration,
                    "may not specify a duration less than 10 minutes",
                )
            )
        elif expiration > 2**32:
            causes.append(
                invalid(
                    "spec.expirationSeconds",
                    expiration,
                    "may not specify a duration larger than 2^32 seconds",
                )
            )
        audiences = [str(a) for a in as_list(spec.get("audiences"))] or [tokens.ISSUER]
        bound: tuple[str, str, str] | None = None
        ref = spec.get("boundObjectRef")
        if ref is not None:
            ref = as_dict(ref)
            kind = str(ref.get("kind") or "")
            if kind not in ("Pod", "Secret"):
                causes.append(
                    invalid(
                        "spec.boundObjectRef.kind",
                        kind,
                        'supported values: "Pod", "Secret"',
                    )
                )
            elif not ref.get("name"):
                causes.append(required("spec.boundObjectRef.name"))
            else:
                obj = bound_object(kind, str(ref["name"]))
                plural = "pods" if kind == "Pod" else "secrets"
                if obj is None:
                    raise APIError(
                        404,
                        "NotFound",
                        f'{plural} "{ref["name"]}" not found',
                        {"name": str(ref["name"]), "kind": plural},
                    )
                uid = str(obj["metadata"]["uid"])
                if ref.get("uid") and ref["uid"] != uid:
                    raise APIError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {plural} "{ref["name"]}": the UID '
                        f"in the bound object reference ({ref['uid']}) does not match the UID "
                        "in record. The object might have been deleted and then recreated",
                        {"name": str(ref["name"]), "kind": plural},
                    )
                bound = (kind, str(ref["name"]), uid)
        if causes:
            texts = [c.text() for c in causes]
            summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
            raise APIError(
                422,
                "Invalid",
                f'TokenRequest.authentication.k8s.io "{name}" is invalid: {summary}',
                {
                    "name": name,
                    "group": "authentication.k8s.io",
                    "kind": "TokenRequest",
                    "causes": [c.status_cause() for c in causes],
                },
            )
        now = time.time()
        claims = tokens.bound_claims(
            namespace=namespace,
            service_account=(name, str(sa["metadata"]["uid"])),
            audiences=audiences,
            expiration_seconds=expiration,
            bound=bound,
            now=now,
        )
        spec_out: Obj = {"audiences": audiences, "expirationSeconds": expiration}
        if ref is not None:
            spec_out["boundObjectRef"] = ref
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": rfc3339(datetime.fromtimestamp(now, UTC)),
            },
            "spec": spec_out,
            "status": {
                "token": self.signer.sign(claims),
                "expirationTimestamp": rfc3339(datetime.fromtimestamp(claims["exp"], UTC)),
            },
        }


def access_review_attributes(rt: ResourceType, spec: Obj, user: UserInfo) -> Attributes:
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        cause = invalid(
            "spec.resourceAttributes",
            "null" if resource is None else resource,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )
        raise APIError(
            422,
            "Invalid",
            f'{rt.qualified_kind} "" is invalid: {cause.text()}',
            {"group": rt.group, "kind": rt.kind, "causes": [cause.status_cause()]},
        )
    if resource is not None:
        r = as_dict(resource)
        return Attributes(
            user,
            str(r.get("verb") or ""),
            "",
            True,
            str(r.get("group") or ""),
            str(r.get("version") or ""),
            str(r.get("resource") or ""),
            str(r.get("subresource") or ""),
            str(r.get("namespace") or ""),
            str(r.get("name") or ""),
        )
    n = as_dict(non_resource)
    return Attributes(user, str(n.get("verb") or ""), str(n.get("path") or ""))


def _error(exc: APIError) -> web.Response:
    return web.Response(status=exc.code, body=dumps(exc.status()), content_type=JSON_TYPE)
