"""Checks and views of one object that need no store: metadata, unknown fields, kind,
what counts for generation and for a no-op, selector matching.
"""

from __future__ import annotations

from collections.abc import Callable

from devcluster import selectors as sel
from devcluster.apiserver.options import Ctx
from devcluster.resources.fields import Cause, check_labels, check_qualified_name, invalid, required
from devcluster.resources.types import METADATA_FIELDS, ResourceType
from devcluster.store import Obj, bad_request
from devcluster.values import as_dict, as_list


def matcher(
    rt: ResourceType, label_selector: str | None, field_selector: str | None
) -> Callable[[Obj], bool]:
    try:
        labels = sel.parse_label_selector(label_selector) if label_selector else None
        fields = (
            sel.parse_field_selector(field_selector, rt.supported_field_selectors())
            if field_selector
            else None
        )
    except sel.SelectorError as exc:
        raise bad_request(str(exc)) from exc

    def matches(obj: Obj) -> bool:
        if labels is not None and not labels.matches(as_dict(obj["metadata"].get("labels"))):
            return False
        return fields is None or bool(fields.matches(obj))

    return matches


def check_metadata(rt: ResourceType, obj: Obj, ctx: Ctx) -> list[Cause]:
    m = obj.get("metadata")
    if m is None:
        m = {}
        obj["metadata"] = m
    if not isinstance(m, dict):
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            "metadata must be an object"
        )
    for key in ("labels", "annotations"):
        value = m.get(key)
        if value is None:
            m.pop(key, None)
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{key} "
                "of type map[string]string"
            )
    if m.get("finalizers") is None:
        m.pop("finalizers", None)
    elif not isinstance(m["finalizers"], list) or not all(
        isinstance(f, str) for f in m["finalizers"]
    ):
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            "json: cannot unmarshal into Go struct field ObjectMeta.metadata.finalizers "
            "of type []string"
        )
    if m.get("ownerReferences") is None:
        m.pop("ownerReferences", None)
    elif not isinstance(m["ownerReferences"], list):
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            "json: cannot unmarshal into Go struct field ObjectMeta.metadata.ownerReferences"
        )
    causes: list[Cause] = []
    causes += check_labels(as_dict(m.get("labels")))
    for key in as_dict(m.get("annotations")):
        causes += check_qualified_name("metadata.annotations", key)
    size = sum(len(k) + len(v) for k, v in as_dict(m.get("annotations")).items())
    if size > 256 * 1024:
        causes.append(
            Cause(
                "metadata.annotations",
                "FieldValueTooLong",
                "Too long: must have at most 262144 bytes",
            )
        )
    for i, ref in enumerate(as_list(m.get("ownerReferences"))):
        if not isinstance(ref, dict):
            causes.append(invalid(f"metadata.ownerReferences[{i}]", ref, "must be an object"))
            continue
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                causes.append(required(f"metadata.ownerReferences[{i}].{key}"))
    controllers = [r for r in as_list(m.get("ownerReferences")) if as_dict(r).get("controller")]
    if len(controllers) > 1:
        causes.append(
            invalid(
                "metadata.ownerReferences",
                [str(as_dict(r).get("name")) for r in controllers],
                "Only one reference can have Controller set to true",
            )
        )
    unknown = sorted(set(m) - METADATA_FIELDS)
    for key in unknown:
        m.pop(key)
        unknown_field(rt, f"metadata.{key}", ctx)
    if rt.top_fields is not None:
        for key in sorted(set(obj) - rt.top_fields):
            obj.pop(key)
            unknown_field(rt, key, ctx)
    return causes


def unknown_field(rt: ResourceType, path: str, ctx: Ctx) -> None:
    if ctx.system:
        return
    if ctx.field_validation == "Strict":
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f'strict decoding error: unknown field "{path}"'
        )
    if ctx.field_validation == "Warn":
        ctx.warnings.append(f'unknown field "{path}"')


def generation_view(rt: ResourceType, obj: Obj) -> Obj:
    view = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    if rt.status or not rt.is_custom:
        view.pop("status", None)
    return view


def comparable(obj: Obj) -> Obj:
    result = dict(obj)
    result["metadata"] = {
        k: v for k, v in as_dict(obj.get("metadata")).items() if k != "resourceVersion"
    }
    return result


def check_kind(rt: ResourceType, obj: Obj) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rt.api_version})"
        )
    if kind and kind != rt.kind:
        raise bad_request(
            f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
        )
    obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
