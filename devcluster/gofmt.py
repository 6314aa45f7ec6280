"""Values printed the way Kubernetes' Go code prints them in error messages."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any


def go_quote(text: str) -> str:
    """Go's strconv.Quote (`%q`), close enough for printable text: names, keys, labels."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def go_float(value: float) -> str:
    """A float as Go prints it with %v / strconv 'g' -1: 4096, 0.7, 1e+08, 1.048576e+06."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    negative = "-" if sign else ""
    scientific = len(digits) - 1 + exponent
    if scientific < -4 or scientific >= 6:  # Go switches to %e from 1e+06 on
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{negative}{mantissa}e{'-' if scientific < 0 else '+'}{abs(scientific):02d}"
    if exponent >= 0:
        return negative + digits + "0" * exponent
    point = len(digits) + exponent
    if point > 0:
        return f"{negative}{digits[:point]}.{digits[point:]}"
    return f"{negative}0.{'0' * -point}{digits}"


def field_error_value(value: Any) -> str:
    """A bad value of an unstructured (custom resource) object as field.Error prints it:
    strings quoted, numbers and bools plain, `null` quoted, the rest as compact JSON.
    """
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def go_value(value: Any) -> str:
    """A value of a built-in kind as its field errors print it (Go's %#v, roughly):
    `[]string{...}` for string lists, JSON otherwise.
    """
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, sort_keys=True)
