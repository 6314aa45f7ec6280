"""Names and field errors: Kubernetes' name and label rules, and `Cause` (one field
error of an Invalid status) with its constructors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from devcluster.gofmt import go_value

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. "
    "'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_1123_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or "
    "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
    "with an alphabetic character, and end with an alphanumeric character (e.g. "
    "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', "
    "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
    "or 'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
    "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)


# --------------------------------------------------------------------------- field errors


@dataclass(frozen=True)
class Cause:
    """One field error of an Invalid status (`field.Error` in Kubernetes)."""

    field: str
    reason: str
    body: str

    def text(self) -> str:
        return f"{self.field}: {self.body}" if self.field else self.body

    def status_cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body, "field": self.field}


def required(path: str, detail: str = "") -> Cause:
    return Cause(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str = "") -> Cause:
    body = f"Invalid value: {go_value(value)}" + (f": {detail}" if detail else "")
    return Cause(path, "FieldValueInvalid", body)


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def unsupported(path: str, value: Any, supported: Iterable[str]) -> Cause:
    options = ", ".join(json.dumps(s) for s in supported)
    return Cause(
        path,
        "FieldValueNotSupported",
        f"Unsupported value: {go_value(value)}: supported values: {options}",
    )


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {go_value(value)}")


def not_found_cause(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueNotFound", f"Not found: {go_value(value)}")


def too_long(path: str, limit: int) -> Cause:
    return Cause(path, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes")


def check_name(path: str, name: str, kind: str = "subdomain") -> list[Cause]:
    if kind == "label":
        pattern, message, limit = DNS1123_LABEL, LABEL_1123_MSG, 63
    elif kind == "dns1035":
        pattern, message, limit = DNS1035_LABEL, LABEL_1035_MSG, 63
    elif kind == "segment":
        if name in (".", "..") or "/" in name or "%" in name:
            return [invalid(path, name, "may not contain '/' or '%' or be '.' or '..'")]
        return []
    else:
        pattern, message, limit = DNS1123_SUBDOMAIN, SUBDOMAIN_MSG, 253
    causes = []
    if len(name) > limit:
        causes.append(invalid(path, name, f"must be no more than {limit} characters"))
    if not pattern.match(name):
        causes.append(invalid(path, name, message))
    return causes


def check_qualified_name(path: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes = []
    if "/" in key and not prefix:
        causes.append(invalid(path, key, "prefix part must be non-empty"))
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        causes.append(invalid(path, key, "prefix part " + SUBDOMAIN_MSG))
    if not name:
        causes.append(invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        causes.append(invalid(path, key, "name part must be no more than 63 characters"))
    elif not LABEL_NAME.match(name):
        causes.append(invalid(path, key, QUALIFIED_NAME_MSG))
    return causes


def check_labels(labels: dict[str, str], path: str = "metadata.labels") -> list[Cause]:
    causes = []
    for key, value in labels.items():
        causes += check_qualified_name(path, key)
        if len(value) > 63:
            causes.append(invalid(f"{path}", value, "must be no more than 63 characters"))
        elif value and not LABEL_NAME.match(value):
            causes.append(invalid(f"{path}", value, LABEL_VALUE_MSG))
    return causes
